//! Session records, their hybrid-logical-clock versions, and the conflict
//! rule every node applies the same way.
//!
//! A record says "in pool P, key K belongs to server S until T". Records are
//! written locally (assign, touch, remove) and arrive from peers (gossip,
//! catch-up); every node keeps the one that [`wins`], so all converge on the
//! same owner without coordination. Pure code: no I/O, no locks beyond one
//! atomic in [`HlcClock`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Bits of an [`Hlc`] that count events within one millisecond.
const COUNTER_BITS: u32 = 16;
/// The largest wall-clock millisecond an [`Hlc`] can carry (48 bits: year 10889).
const MAX_PHYSICAL_MS: u64 = (1 << (64 - COUNTER_BITS)) - 1;
/// A peer's version more than this far ahead of our wall clock is not
/// adopted by [`HlcClock::observe`]: one node with a wild clock must not drag
/// every other node's versions into the future.
pub const MAX_DRIFT_MS: u64 = 60_000;

/// Milliseconds since the Unix epoch (0 if the system clock is before it).
/// Session expiry and HLC versions use this clock because both are compared
/// across nodes; [`crate::clock`] is monotonic but local.
pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A hybrid logical clock value: 48 bits of wall-clock milliseconds, then a
/// 16-bit counter. Ordered as a plain `u64`, so it follows wall time while
/// still strictly increasing on one node when the wall clock stalls or steps
/// back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hlc(pub u64);

impl Hlc {
    pub fn from_parts(physical_ms: u64, counter: u16) -> Self {
        Hlc((physical_ms.min(MAX_PHYSICAL_MS) << COUNTER_BITS) | u64::from(counter))
    }

    pub fn physical_ms(self) -> u64 {
        self.0 >> COUNTER_BITS
    }

    pub fn counter(self) -> u16 {
        (self.0 & 0xffff) as u16
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.physical_ms(), self.counter())
    }
}

/// Issues this node's [`Hlc`] versions. Lock-free: one atomic holds the last
/// value issued or observed.
#[derive(Debug, Default)]
pub struct HlcClock {
    last: AtomicU64,
}

impl HlcClock {
    pub fn new() -> Self {
        HlcClock::default()
    }

    /// A version greater than every version issued or observed so far.
    pub fn now(&self) -> Hlc {
        self.now_at(unix_now_ms())
    }

    /// [`HlcClock::now`] with the wall clock given (tests, and callers that
    /// already read it). When the counter of one millisecond is exhausted the
    /// value carries into the millisecond bits: versions stay unique and
    /// ordered, and run at most a little ahead of the wall clock.
    pub fn now_at(&self, wall_ms: u64) -> Hlc {
        let floor = Hlc::from_parts(wall_ms, 0).0;
        let prev = self
            .last
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| Some(floor.max(last.saturating_add(1))))
            .unwrap_or_else(|last| last);
        Hlc(floor.max(prev.saturating_add(1)))
    }

    /// Takes a peer's version into account so that every later local version
    /// is greater. Returns `false` (and ignores it) when it is more than
    /// [`MAX_DRIFT_MS`] ahead of the local wall clock.
    pub fn observe(&self, remote: Hlc) -> bool {
        self.observe_at(remote, unix_now_ms())
    }

    /// [`HlcClock::observe`] with the wall clock given.
    pub fn observe_at(&self, remote: Hlc, wall_ms: u64) -> bool {
        if remote.physical_ms() > wall_ms.saturating_add(MAX_DRIFT_MS) {
            return false;
        }
        self.last.fetch_max(remote.0, Ordering::AcqRel);
        true
    }
}

/// Who owns one affinity key of one pool, until when, and which write this is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The affinity key (e.g. the agent's hostname).
    pub key: String,
    pub pool: String,
    /// The server's name in the pool.
    pub server: String,
    /// Unix milliseconds after which the record no longer routes. For a
    /// tombstone: when the tombstone itself may be forgotten.
    pub expires_at_ms: u64,
    pub version: Hlc,
    /// The node that wrote this version; breaks ties between equal versions.
    pub origin: String,
    /// A removal, kept for a bounded time so that an older record arriving
    /// late from a peer does not bring the session back.
    pub tombstone: bool,
}

impl SessionRecord {
    /// Whether the record routes traffic at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        !self.tombstone && now_ms < self.expires_at_ms
    }
}

/// Last-writer-wins: `a` replaces `b` when its `(version, origin)` is
/// greater. Equal pairs are the same write, so neither wins and merging a
/// record twice changes nothing.
pub fn wins(a: &SessionRecord, b: &SessionRecord) -> bool {
    (a.version, a.origin.as_str()) > (b.version, b.origin.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(version: Hlc, origin: &str) -> SessionRecord {
        SessionRecord {
            key: "host1".into(),
            pool: "agents".into(),
            server: "s1".into(),
            expires_at_ms: 10,
            version,
            origin: origin.into(),
            tombstone: false,
        }
    }

    #[test]
    fn hlc_packs_physical_and_counter() {
        let h = Hlc::from_parts(1_700_000_000_123, 7);
        assert_eq!(h.physical_ms(), 1_700_000_000_123);
        assert_eq!(h.counter(), 7);
        assert_eq!(h.to_string(), "1700000000123.7");
        assert!(Hlc::from_parts(5, 0) > Hlc::from_parts(4, u16::MAX));
        // Out-of-range wall clocks saturate instead of wrapping.
        assert_eq!(Hlc::from_parts(u64::MAX, 0).physical_ms(), MAX_PHYSICAL_MS);
    }

    #[test]
    fn clock_follows_wall_time_and_never_goes_back() {
        let c = HlcClock::new();
        assert_eq!(c.now_at(1000), Hlc::from_parts(1000, 0));
        assert_eq!(c.now_at(1000), Hlc::from_parts(1000, 1));
        // Wall clock steps back: the counter keeps counting.
        assert_eq!(c.now_at(900), Hlc::from_parts(1000, 2));
        assert_eq!(c.now_at(2000), Hlc::from_parts(2000, 0));
    }

    #[test]
    fn counter_overflow_carries_into_milliseconds() {
        let c = HlcClock::new();
        c.observe_at(Hlc::from_parts(1000, u16::MAX), 1000);
        let next = c.now_at(1000);
        assert_eq!(next, Hlc::from_parts(1001, 0));
        assert!(next > Hlc::from_parts(1000, u16::MAX));
    }

    #[test]
    fn observe_moves_the_clock_past_a_peer_within_drift() {
        let c = HlcClock::new();
        assert!(c.observe_at(Hlc::from_parts(5000, 3), 1000));
        assert_eq!(c.now_at(1000), Hlc::from_parts(5000, 4));
        // Older remote versions change nothing.
        assert!(c.observe_at(Hlc::from_parts(10, 0), 1000));
        assert_eq!(c.now_at(1000), Hlc::from_parts(5000, 5));
        // A peer far in the future is ignored.
        assert!(!c.observe_at(Hlc::from_parts(1000 + MAX_DRIFT_MS + 1, 0), 1000));
        assert_eq!(c.now_at(1000), Hlc::from_parts(5000, 6));
    }

    #[test]
    fn concurrent_ticks_are_unique() {
        let c = std::sync::Arc::new(HlcClock::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).map(|_| c.now_at(42).0).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 4000);
    }

    #[test]
    fn wins_is_last_writer_then_origin() {
        let old = rec(Hlc::from_parts(100, 0), "lb2");
        let new = rec(Hlc::from_parts(100, 1), "lb1");
        assert!(wins(&new, &old));
        assert!(!wins(&old, &new));
        // Same version: the greater origin wins, deterministically on every node.
        let a = rec(Hlc::from_parts(100, 0), "lb1");
        let b = rec(Hlc::from_parts(100, 0), "lb2");
        assert!(wins(&b, &a));
        assert!(!wins(&a, &b));
        // The same write never wins over itself (idempotent merge).
        assert!(!wins(&a, &a.clone()));
    }

    #[test]
    fn liveness_respects_expiry_and_tombstones() {
        let mut r = rec(Hlc::from_parts(1, 0), "lb1");
        assert!(r.is_live(9));
        assert!(!r.is_live(10));
        r.tombstone = true;
        assert!(!r.is_live(0));
    }
}
