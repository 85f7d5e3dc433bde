//! Busy polling (`node.busy_poll`): while traffic flows, the runtime polls
//! for I/O with a zero timeout instead of sleeping in `epoll_wait`.
//!
//! A node that keeps up with its load goes idle between bursts. Each time it
//! sleeps, the next packet for it has to wake it: the sender (a client or a
//! server, often on another core) pays for the wake-up, and on a virtual
//! machine a halted vCPU is slow to come back (HAProxy's `busy-polling`
//! option exists for the same reason). With a window set, a poller task
//! keeps the runtime awake for that long after the last request: it yields
//! in a loop, and tokio polls the I/O driver without blocking between its
//! turns. When no request came for a whole window, the poller sleeps until
//! [`traffic`] is called (an accepted connection, a request), so an idle
//! node uses no CPU. The price is a busy core while traffic flows, which is
//! why it is off by default.
//!
//! One poller per process: `sysmanage-node run` starts it (tests that start
//! nodes in-process do not).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::metrics::COUNTERS;

/// A poller and the state [`traffic`] shares with it.
#[derive(Debug)]
pub struct Poller {
    /// True while the poller sleeps (waiting for [`Poller::traffic`]).
    idle: AtomicBool,
    wake: Notify,
    /// Turns taken (each one a zero-timeout poll of the runtime's driver)
    /// and times the poller went to sleep: for tests and the curious.
    spins: AtomicU64,
    sleeps: AtomicU64,
}

/// The process's poller (started by `sysmanage-node run` when
/// `node.busy_poll` is set).
pub static POLLER: Poller = Poller::new();

/// Marks traffic for the process's poller; see [`Poller::traffic`].
#[inline]
pub fn traffic() {
    POLLER.traffic();
}

/// The poller for `sysmanage-node run`: activity is the process's request
/// count. Runs until its task is dropped.
pub async fn run(window: Duration) {
    POLLER.poll(window, || COUNTERS.requests.load(Ordering::Relaxed)).await
}

impl Default for Poller {
    fn default() -> Self {
        Self::new()
    }
}

impl Poller {
    pub const fn new() -> Poller {
        Poller {
            idle: AtomicBool::new(false),
            wake: Notify::const_new(),
            spins: AtomicU64::new(0),
            sleeps: AtomicU64::new(0),
        }
    }

    /// Marks traffic (an accepted connection, a request): wakes the poller
    /// if it went to sleep. One relaxed load when it is already polling.
    #[inline]
    pub fn traffic(&self) {
        if self.idle.load(Ordering::Relaxed) {
            self.idle.store(false, Ordering::Relaxed);
            self.wake.notify_one();
        }
    }

    /// `(turns, sleeps)` so far.
    pub fn stats(&self) -> (u64, u64) {
        (self.spins.load(Ordering::Relaxed), self.sleeps.load(Ordering::Relaxed))
    }

    /// Whether the poller is sleeping.
    pub fn is_idle(&self) -> bool {
        self.idle.load(Ordering::Relaxed)
    }

    /// Keeps the runtime polling while `activity` changed within `window`,
    /// then sleeps until [`Poller::traffic`]; and again.
    pub async fn poll(&self, window: Duration, activity: impl Fn() -> u64) {
        loop {
            let mut seen = activity();
            let mut until = Instant::now() + window;
            loop {
                // Deferred wake-up: with nothing else to run, tokio polls the
                // I/O driver with a zero timeout and then runs this task again.
                tokio::task::yield_now().await;
                self.spins.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                let current = activity();
                if current != seen {
                    seen = current;
                    until = now + window;
                } else if now >= until {
                    break;
                }
            }
            self.sleeps.fetch_add(1, Ordering::Relaxed);
            self.idle.store(true, Ordering::Relaxed);
            // A `traffic` call between the store and here leaves a permit, so
            // this returns at once.
            self.wake.notified().await;
            self.idle.store(false, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    async fn wait_until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The poller spins while activity changes, sleeps a window after it
    /// stops (no turns while asleep), and spins again after `traffic`.
    #[tokio::test(flavor = "current_thread")]
    async fn polls_while_traffic_flows_and_sleeps_when_it_stops() {
        static P: Poller = Poller::new();
        let counter = Arc::new(AtomicU64::new(0));
        let c = counter.clone();
        let poller = tokio::spawn(P.poll(Duration::from_millis(30), move || c.load(Ordering::Relaxed)));

        // Traffic for 100 ms (longer than the window): the poller never sleeps.
        let start = Instant::now();
        let (spins0, sleeps0) = P.stats();
        while start.elapsed() < Duration::from_millis(100) {
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (spins1, sleeps1) = P.stats();
        assert_eq!(sleeps1, sleeps0, "slept while traffic flowed");
        assert!(spins1 > spins0 + 10, "the poller did not keep polling: {} turns", spins1 - spins0);

        // Traffic stops: asleep after about one window, and no turns while asleep.
        wait_until("the poller sleeps", || P.is_idle()).await;
        let (spins2, sleeps2) = P.stats();
        assert_eq!(sleeps2, sleeps1 + 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(P.stats().0, spins2, "turns taken while asleep");
        assert!(P.is_idle());

        // Traffic wakes it.
        P.traffic();
        wait_until("the poller polls again", || P.stats().0 > spins2).await;
        assert!(!P.is_idle());
        poller.abort();
    }
}
