//! Test-only fault injection at send time: drop a fraction of datagrams,
//! delay them, or cut links between sets of nodes (by gossip address).
//!
//! Compiled always so that end-to-end tests can drive a real binary, but a
//! transport without an injector pays nothing, and one with an idle injector
//! pays one relaxed atomic load per datagram. Rules are shared: clone the
//! handle into every node's transport and one `partition` call cuts the links
//! in both directions for all of them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// What to do with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultVerdict {
    Deliver,
    Drop,
    Delay(Duration),
}

#[derive(Debug, Default)]
struct Rules {
    drop_rate: f64,
    delay: Duration,
    jitter: Duration,
    /// Links cut: a datagram from a member of one set to a member of the
    /// other is dropped, in both directions.
    partitions: Vec<(HashSet<SocketAddr>, HashSet<SocketAddr>)>,
    rng: Option<fastrand::Rng>,
}

impl Rules {
    fn is_idle(&self) -> bool {
        self.drop_rate <= 0.0 && self.delay.is_zero() && self.jitter.is_zero() && self.partitions.is_empty()
    }
}

#[derive(Debug, Default)]
struct Inner {
    active: AtomicBool,
    rules: Mutex<Rules>,
}

/// A handle on shared fault rules. `Clone` shares them.
#[derive(Debug, Clone, Default)]
pub struct FaultInjector {
    inner: Arc<Inner>,
}

impl FaultInjector {
    pub fn new() -> Self {
        FaultInjector::default()
    }

    /// Seeds the random choices (drop, jitter) for reproducible tests.
    pub fn with_seed(self, seed: u64) -> Self {
        self.update(|r| r.rng = Some(fastrand::Rng::with_seed(seed)));
        self
    }

    fn rules(&self) -> MutexGuard<'_, Rules> {
        // A panic while holding this lock leaves plain data: keep using it.
        self.inner.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut Rules)) {
        let mut rules = self.rules();
        f(&mut rules);
        self.inner.active.store(!rules.is_idle(), Ordering::Release);
    }

    /// Drops each datagram with probability `rate` (clamped to 0..=1).
    pub fn set_drop_rate(&self, rate: f64) {
        self.update(|r| r.drop_rate = if rate.is_nan() { 0.0 } else { rate.clamp(0.0, 1.0) });
    }

    /// Delays each datagram by `delay` plus a uniform random `0..=jitter`.
    pub fn set_delay(&self, delay: Duration, jitter: Duration) {
        self.update(|r| {
            r.delay = delay;
            r.jitter = jitter;
        });
    }

    /// Cuts every link between a member of `a` and a member of `b`.
    pub fn partition(&self, a: impl IntoIterator<Item = SocketAddr>, b: impl IntoIterator<Item = SocketAddr>) {
        let (a, b): (HashSet<_>, HashSet<_>) = (a.into_iter().collect(), b.into_iter().collect());
        self.update(|r| r.partitions.push((a, b)));
    }

    /// Removes every partition (drop rate and delay stay).
    pub fn heal(&self) {
        self.update(|r| r.partitions.clear());
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.update(|r| {
            let rng = r.rng.take();
            *r = Rules { rng, ..Rules::default() };
        });
    }

    /// The verdict for one datagram from `from` to `to`.
    pub fn verdict(&self, from: SocketAddr, to: SocketAddr) -> FaultVerdict {
        if !self.inner.active.load(Ordering::Acquire) {
            return FaultVerdict::Deliver;
        }
        let mut rules = self.rules();
        let cut = rules
            .partitions
            .iter()
            .any(|(a, b)| (a.contains(&from) && b.contains(&to)) || (b.contains(&from) && a.contains(&to)));
        if cut {
            return FaultVerdict::Drop;
        }
        let (drop_rate, delay, jitter) = (rules.drop_rate, rules.delay, rules.jitter);
        let rng = rules.rng.get_or_insert_with(fastrand::Rng::new);
        if drop_rate > 0.0 && rng.f64() < drop_rate {
            return FaultVerdict::Drop;
        }
        let extra = if jitter.is_zero() { Duration::ZERO } else { jitter.mul_f64(rng.f64()) };
        let total = delay + extra;
        if total.is_zero() {
            FaultVerdict::Deliver
        } else {
            FaultVerdict::Delay(total)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, n], 7946))
    }

    #[test]
    fn idle_delivers() {
        let f = FaultInjector::new();
        assert_eq!(f.verdict(a(1), a(2)), FaultVerdict::Deliver);
    }

    #[test]
    fn partition_cuts_both_directions_until_healed() {
        let f = FaultInjector::new();
        f.partition([a(1), a(2)], [a(3)]);
        assert_eq!(f.verdict(a(1), a(3)), FaultVerdict::Drop);
        assert_eq!(f.verdict(a(3), a(2)), FaultVerdict::Drop);
        assert_eq!(f.verdict(a(1), a(2)), FaultVerdict::Deliver);
        f.heal();
        assert_eq!(f.verdict(a(1), a(3)), FaultVerdict::Deliver);
    }

    #[test]
    fn drop_rate_is_roughly_honoured() {
        let f = FaultInjector::new().with_seed(7);
        f.set_drop_rate(0.25);
        let dropped = (0..10_000).filter(|_| f.verdict(a(1), a(2)) == FaultVerdict::Drop).count();
        assert!((2_000..3_000).contains(&dropped), "{dropped}");
        f.set_drop_rate(1.0);
        assert_eq!(f.verdict(a(1), a(2)), FaultVerdict::Drop);
        f.clear();
        assert_eq!(f.verdict(a(1), a(2)), FaultVerdict::Deliver);
    }

    #[test]
    fn delay_with_jitter() {
        let f = FaultInjector::new().with_seed(1);
        f.set_delay(Duration::from_millis(10), Duration::from_millis(5));
        for _ in 0..100 {
            match f.verdict(a(1), a(2)) {
                FaultVerdict::Delay(d) => assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(15)),
                v => panic!("{v:?}"),
            }
        }
    }
}
