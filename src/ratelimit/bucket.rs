//! Token bucket zones as GCRA (generic cell rate algorithm), with nginx
//! `limit_req ... burst=B nodelay` semantics. The whole per-key state is one
//! number, the theoretical arrival time (TAT): when the key's bucket will be
//! full again. See the module docs of [`super`] for the exact rules.

use std::time::Duration;

use super::table::Limit;
use super::{Decision, RateLimitError};

const NS_PER_MS: u64 = 1_000_000;
/// The longest a bucket may take to refill: rates slower than this are a
/// configuration mistake, and the bound keeps every sum below `u64::MAX`.
const MAX_SPAN_NS: u64 = 365 * 24 * 3600 * 1_000_000_000;

/// A zone's rate and burst, in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bucket {
    /// Time one request costs: 1 / rate.
    interval_ns: u64,
    /// How far ahead of `now` the TAT may run and still admit: burst × interval.
    tolerance_ns: u64,
}

/// Per-key state: 8 bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct BucketState {
    /// Theoretical arrival time on the caller's clock, in nanoseconds. The
    /// bucket is full (the key carries no information) once `now >= tat_ns`.
    tat_ns: u64,
}

impl Bucket {
    pub(super) fn new(zone: &str, per_second: f64, burst: u32) -> Result<Bucket, RateLimitError> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(RateLimitError::BadRate { zone: zone.to_string(), rate: per_second });
        }
        // At least 1 ns; rates above 10^9/s are not meaningful anyway.
        let interval = (1e9 / per_second).round().max(1.0);
        let span = interval * (f64::from(burst) + 1.0);
        if span > MAX_SPAN_NS as f64 {
            return Err(RateLimitError::TooSlow { zone: zone.to_string(), rate: per_second, burst });
        }
        let interval_ns = interval as u64;
        Ok(Bucket { interval_ns, tolerance_ns: interval_ns * u64::from(burst) })
    }
}

impl Limit for Bucket {
    type State = BucketState;

    fn fresh(&self, now_ms: u64) -> BucketState {
        BucketState { tat_ns: now_ms.saturating_mul(NS_PER_MS) }
    }

    fn admit(&self, state: &mut BucketState, now_ms: u64) -> Decision {
        let now = now_ms.saturating_mul(NS_PER_MS);
        // A TAT in the past means a full bucket: count from now.
        let tat = state.tat_ns.max(now);
        let ahead = tat - now;
        if ahead > self.tolerance_ns {
            // Admitted once `tat - t <= tolerance`, i.e. at t = tat - tolerance.
            let wait_ns = ahead - self.tolerance_ns;
            return Decision::Reject { retry_after: Duration::from_millis(wait_ns.div_ceil(NS_PER_MS)) };
        }
        state.tat_ns = tat.saturating_add(self.interval_ns);
        Decision::Allow
    }

    fn remaining_ns(&self, state: &BucketState, now_ms: u64) -> u64 {
        state.tat_ns.saturating_sub(now_ms.saturating_mul(NS_PER_MS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(per_second: f64, burst: u32) -> Bucket {
        Bucket::new("t", per_second, burst).expect("valid bucket")
    }

    /// Sends `n` requests at `now_ms`; returns how many were admitted.
    fn burst_at(b: &Bucket, s: &mut BucketState, now_ms: u64, n: usize) -> usize {
        (0..n).filter(|_| b.admit(s, now_ms).is_allowed()).count()
    }

    #[test]
    fn burst_plus_one_pass_at_one_instant_like_nginx() {
        // nginx `rate=5r/s burst=10 nodelay`: 11 pass at once, the 12th is rejected.
        let b = bucket(5.0, 10);
        let mut s = b.fresh(1_000);
        assert_eq!(burst_at(&b, &mut s, 1_000, 11), 11);
        assert!(!b.admit(&mut s, 1_000).is_allowed());
    }

    #[test]
    fn burst_zero_admits_one_request_per_interval() {
        let b = bucket(10.0, 0);
        let mut s = b.fresh(0);
        assert!(b.admit(&mut s, 0).is_allowed());
        assert!(!b.admit(&mut s, 99).is_allowed());
        assert!(b.admit(&mut s, 100).is_allowed());
        assert!(!b.admit(&mut s, 100).is_allowed());
    }

    #[test]
    fn bucket_refills_at_the_rate_and_no_further_than_burst() {
        let b = bucket(5.0, 10); // one request per 200 ms
        let mut s = b.fresh(0);
        assert_eq!(burst_at(&b, &mut s, 0, 20), 11);
        // 200 ms refill one request.
        assert_eq!(burst_at(&b, &mut s, 200, 5), 1);
        // 1 s later (at 1200 ms): five more.
        assert_eq!(burst_at(&b, &mut s, 1_200, 10), 5);
        // Idle long after refilling: still only burst + 1.
        assert_eq!(burst_at(&b, &mut s, 60_000, 30), 11);
    }

    #[test]
    fn sustained_load_is_admitted_at_exactly_rate_after_the_burst() {
        // rate 10/s, burst 20, one request per millisecond for 10 s:
        // 21 at once, then one per 100 ms (admissions 21..=119 at 100 ms .. 9900 ms).
        let b = bucket(10.0, 20);
        let mut s = b.fresh(0);
        let admitted = (0..10_000u64).filter(|&t| b.admit(&mut s, t).is_allowed()).count();
        assert_eq!(admitted, 120);
    }

    #[test]
    fn retry_after_is_the_exact_wait_to_admission() {
        for (rate, burst) in [(5.0, 10), (3.0, 0), (10.0, 20), (0.1, 2), (1000.0, 5), (7.0 / 60.0, 1)] {
            let b = bucket(rate, burst);
            let mut s = b.fresh(0);
            let mut now = 0;
            for _ in 0..50 {
                match b.admit(&mut s, now) {
                    Decision::Allow => now += 7,
                    Decision::Reject { retry_after } => {
                        let wait = retry_after.as_millis() as u64;
                        assert!(wait > 0);
                        let mut probe = s;
                        assert!(!b.admit(&mut probe, now + wait - 1).is_allowed(), "rate {rate} burst {burst}");
                        let mut probe = s;
                        assert!(b.admit(&mut probe, now + wait).is_allowed(), "rate {rate} burst {burst}");
                        now += wait / 2;
                    }
                }
            }
        }
    }

    #[test]
    fn retry_after_after_a_spent_burst() {
        let b = bucket(5.0, 10);
        let mut s = b.fresh(0);
        burst_at(&b, &mut s, 0, 11);
        assert_eq!(b.admit(&mut s, 0), Decision::Reject { retry_after: Duration::from_millis(200) });
        assert_eq!(b.admit(&mut s, 150), Decision::Reject { retry_after: Duration::from_millis(50) });
        // Fractional intervals round up: 3/s is 333.33 ms.
        let b = bucket(3.0, 0);
        let mut s = b.fresh(0);
        assert!(b.admit(&mut s, 0).is_allowed());
        assert_eq!(b.admit(&mut s, 0), Decision::Reject { retry_after: Duration::from_millis(334) });
    }

    #[test]
    fn rejected_requests_do_not_consume() {
        let b = bucket(1.0, 0);
        let mut s = b.fresh(0);
        assert!(b.admit(&mut s, 0).is_allowed());
        for t in 1..1_000 {
            assert!(!b.admit(&mut s, t).is_allowed());
        }
        assert!(b.admit(&mut s, 1_000).is_allowed());
    }

    #[test]
    fn per_minute_rates() {
        // `6/m` arrives as 0.1 per second: one request per 10 s.
        let b = bucket(6.0 / 60.0, 0);
        let mut s = b.fresh(0);
        assert!(b.admit(&mut s, 0).is_allowed());
        assert_eq!(b.admit(&mut s, 1), Decision::Reject { retry_after: Duration::from_millis(9_999) });
        assert!(b.admit(&mut s, 10_000).is_allowed());
        // `300/m` with burst 2: 3 at once, then one per 200 ms.
        let b = bucket(300.0 / 60.0, 2);
        let mut s = b.fresh(0);
        assert_eq!(burst_at(&b, &mut s, 0, 5), 3);
        assert_eq!(burst_at(&b, &mut s, 200, 5), 1);
    }

    #[test]
    fn remaining_reaches_zero_when_the_bucket_is_full_again() {
        let b = bucket(5.0, 10);
        let mut s = b.fresh(0);
        assert_eq!(b.remaining_ns(&s, 0), 0);
        burst_at(&b, &mut s, 0, 11);
        assert_eq!(b.remaining_ns(&s, 0), 2_200 * NS_PER_MS);
        assert_eq!(b.remaining_ns(&s, 2_199), NS_PER_MS);
        assert_eq!(b.remaining_ns(&s, 2_200), 0);
    }

    #[test]
    fn a_clock_behind_the_state_neither_panics_nor_resets() {
        let b = bucket(1.0, 0);
        let mut s = b.fresh(5_000);
        assert!(b.admit(&mut s, 5_000).is_allowed());
        assert!(!b.admit(&mut s, 4_000).is_allowed());
        assert!(!b.admit(&mut s, 0).is_allowed());
    }

    #[test]
    fn invalid_rates_are_refused() {
        assert!(matches!(Bucket::new("z", 0.0, 1), Err(RateLimitError::BadRate { .. })));
        assert!(matches!(Bucket::new("z", -1.0, 1), Err(RateLimitError::BadRate { .. })));
        assert!(matches!(Bucket::new("z", f64::NAN, 1), Err(RateLimitError::BadRate { .. })));
        assert!(matches!(Bucket::new("z", f64::INFINITY, 1), Err(RateLimitError::BadRate { .. })));
        assert!(matches!(Bucket::new("z", 1e-9, 0), Err(RateLimitError::TooSlow { .. })));
        assert!(Bucket::new("z", 1e12, u32::MAX).is_ok());
    }
}
