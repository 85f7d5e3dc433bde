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

/// A fault rule that [`FaultInjector::apply`] could not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fault rule `{rule}`: {what}")]
pub struct FaultSpecError {
    pub rule: String,
    pub what: &'static str,
}

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

    /// Applies rules written as text, for end-to-end tests that drive a real
    /// binary (through an environment variable or an admin call). Rules are
    /// separated by `;`:
    ///
    /// - `drop=0.25`: drop a quarter of the datagrams;
    /// - `delay=100ms` or `delay=100ms+50ms`: fixed delay plus uniform jitter;
    /// - `partition=127.0.0.1:7946,127.0.0.2:7946|127.0.0.3:7946`: cut links
    ///   between the two comma-separated sets;
    /// - `heal`: remove partitions; `clear`: remove every rule.
    ///
    /// Nothing is applied when any rule is invalid.
    pub fn apply(&self, spec: &str) -> Result<(), FaultSpecError> {
        enum Rule {
            Drop(f64),
            Delay(Duration, Duration),
            Partition(Vec<SocketAddr>, Vec<SocketAddr>),
            Heal,
            Clear,
        }
        let mut rules = Vec::new();
        for rule in spec.split(';').map(str::trim).filter(|r| !r.is_empty()) {
            let bad = |what: &'static str| FaultSpecError { rule: rule.to_string(), what };
            let (name, value) = rule.split_once('=').map_or((rule, ""), |(n, v)| (n.trim(), v.trim()));
            rules.push(match name {
                "drop" => {
                    let rate: f64 = value.parse().map_err(|_| bad("expected a probability such as 0.25"))?;
                    if !(0.0..=1.0).contains(&rate) {
                        return Err(bad("the probability must be between 0 and 1"));
                    }
                    Rule::Drop(rate)
                }
                "delay" => {
                    let (base, jitter) = value.split_once('+').unwrap_or((value, "0s"));
                    let base =
                        humantime::parse_duration(base.trim()).map_err(|_| bad("expected a duration such as 100ms"))?;
                    let jitter =
                        humantime::parse_duration(jitter.trim()).map_err(|_| bad("expected a jitter such as 50ms"))?;
                    Rule::Delay(base, jitter)
                }
                "partition" => {
                    let (a, b) = value.split_once('|').ok_or_else(|| bad("expected ADDR,ADDR|ADDR,ADDR"))?;
                    let parse = |side: &str| -> Result<Vec<SocketAddr>, FaultSpecError> {
                        side.split(',')
                            .map(|s| {
                                s.trim().parse().map_err(|_| bad("expected socket addresses such as 127.0.0.1:7946"))
                            })
                            .collect()
                    };
                    Rule::Partition(parse(a)?, parse(b)?)
                }
                "heal" => Rule::Heal,
                "clear" => Rule::Clear,
                _ => return Err(bad("unknown rule; expected drop, delay, partition, heal or clear")),
            });
        }
        for rule in rules {
            match rule {
                Rule::Drop(rate) => self.set_drop_rate(rate),
                Rule::Delay(base, jitter) => self.set_delay(base, jitter),
                Rule::Partition(a, b) => self.partition(a, b),
                Rule::Heal => self.heal(),
                Rule::Clear => self.clear(),
            }
        }
        Ok(())
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
    fn rules_from_text() {
        let f = FaultInjector::new().with_seed(3);
        f.apply("partition=127.0.0.1:7946,127.0.0.2:7946|127.0.0.3:7946; delay=10ms+0ms").unwrap();
        assert_eq!(f.verdict(a(1), a(3)), FaultVerdict::Drop);
        assert_eq!(f.verdict(a(1), a(2)), FaultVerdict::Delay(Duration::from_millis(10)));
        f.apply("heal").unwrap();
        assert_eq!(f.verdict(a(1), a(3)), FaultVerdict::Delay(Duration::from_millis(10)));
        f.apply("clear;drop=1").unwrap();
        assert_eq!(f.verdict(a(1), a(2)), FaultVerdict::Drop);
        for bad in ["drop=2", "drop=x", "delay=soon", "partition=127.0.0.1:1", "partition=a|b", "explode"] {
            assert!(f.apply(bad).is_err(), "{bad}");
        }
        // An invalid rule applies nothing, not even the valid ones before it.
        f.apply("clear").unwrap();
        assert!(f.apply("drop=1;bogus").is_err());
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
