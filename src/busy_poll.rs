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
//! Coalescing (`node.busy_poll_coalesce`): polling as often as it can, a
//! node that is not saturated answers each request as soon as it arrives,
//! so its clients and servers get their packets a few at a time and wake
//! up (and are switched to) more often per request. When they share cores,
//! as wrk and the backends do in the benchmark harness, those switches are
//! a large part of what a request costs. With a coalescing wait set, after
//! a turn of the event loop that served at most [`LIGHT_TURN`] requests the
//! poller spins for that long (no system call) before the next poll, so the
//! events of that time are handled together and the responses and upstream
//! requests leave in bursts, like those of a proxy that is busier. A turn
//! that served more is not followed by a wait: a saturated node spends no
//! time waiting. The price is up to that wait added to a request's latency.
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
    /// Coalescing waits taken (`node.busy_poll_coalesce`).
    waits: AtomicU64,
}

/// With `node.busy_poll_coalesce` set, a turn of the event loop that served
/// at most this many requests is followed by a coalescing wait; a busier
/// turn is not (the node has no time to spare then).
pub const LIGHT_TURN: u64 = 3;

/// Spins (no system call, no sleep) until `deadline`; returns the time then.
fn spin_until(deadline: Instant) -> Instant {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return now;
        }
        std::hint::spin_loop();
    }
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
pub async fn run(window: Duration, coalesce: Duration) {
    POLLER.poll(window, coalesce, || COUNTERS.requests.load(Ordering::Relaxed)).await
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
            waits: AtomicU64::new(0),
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

    /// Coalescing waits taken so far.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Whether the poller is sleeping.
    pub fn is_idle(&self) -> bool {
        self.idle.load(Ordering::Relaxed)
    }

    /// Keeps the runtime polling while `activity` changed within `window`,
    /// then sleeps until [`Poller::traffic`]; and again. With `coalesce`
    /// set, a turn that saw at most [`LIGHT_TURN`] new requests is followed
    /// by a wait of that long before the next poll (see the module docs).
    pub async fn poll(&self, window: Duration, coalesce: Duration, activity: impl Fn() -> u64) {
        loop {
            let mut seen = activity();
            let mut until = Instant::now() + window;
            let mut last_turn = seen;
            loop {
                // Deferred wake-up: with nothing else to run, tokio polls the
                // I/O driver with a zero timeout and then runs this task again.
                tokio::task::yield_now().await;
                self.spins.fetch_add(1, Ordering::Relaxed);
                let mut now = Instant::now();
                let current = activity();
                last_turn = if !coalesce.is_zero() && current.wrapping_sub(last_turn) <= LIGHT_TURN {
                    now = spin_until(now + coalesce);
                    self.waits.fetch_add(1, Ordering::Relaxed);
                    // Other workers may have served requests meanwhile.
                    activity()
                } else {
                    current
                };
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
        // A window of 150 ms: a test thread descheduled for less than that
        // on a loaded machine is still "traffic flowing".
        let poller =
            tokio::spawn(P.poll(Duration::from_millis(150), Duration::ZERO, move || c.load(Ordering::Relaxed)));

        // Traffic for 250 ms (longer than the window): the poller never sleeps.
        let start = Instant::now();
        let (spins0, sleeps0) = P.stats();
        while start.elapsed() < Duration::from_millis(250) {
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

    /// With `coalesce` set, a light turn (here: no new requests) is followed
    /// by a wait of that long, so turns are at least that far apart; a busy
    /// turn (more than `LIGHT_TURN` new requests) is not.
    #[tokio::test(flavor = "current_thread")]
    async fn coalesce_waits_after_light_turns_only() {
        static LIGHT: Poller = Poller::new();
        let coalesce = Duration::from_millis(2);
        let poller = tokio::spawn(LIGHT.poll(Duration::from_secs(5), coalesce, || 7));
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(40)).await;
        let elapsed = start.elapsed();
        let (turns, _) = LIGHT.stats();
        poller.abort();
        let most = (elapsed.as_micros() / coalesce.as_micros()) as u64 + 1;
        assert!(turns <= most, "{turns} turns in {elapsed:?}: the waits did not hold the poller back");
        assert!(LIGHT.waits() >= 5, "only {} coalescing waits", LIGHT.waits());

        static BUSY: Poller = Poller::new();
        let served = Arc::new(AtomicU64::new(0));
        let s = served.clone();
        // Every read of the request count shows LIGHT_TURN + 1 more requests.
        let activity = move || s.fetch_add(LIGHT_TURN + 1, Ordering::Relaxed);
        let poller = tokio::spawn(BUSY.poll(Duration::from_secs(5), coalesce, activity));
        wait_until("the busy poller takes 100 turns", || BUSY.stats().0 >= 100).await;
        poller.abort();
        assert_eq!(BUSY.waits(), 0, "waited after busy turns");
    }
}
