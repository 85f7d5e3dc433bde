//! The per-key state of one zone: a fixed array of shards, each a small
//! mutex around a hash map from key to the algorithm's state, padded to its
//! own cache line. A check locks one shard for a lookup and a few arithmetic
//! operations; a known key allocates nothing.
//!
//! Memory stays bounded two ways:
//! - idle entries (state that no longer changes any decision) are dropped
//!   by [`Table::sweep`], and by the shard itself before its map would grow;
//! - each shard holds at most `max_keys / shards` entries. A new key in a
//!   full shard first drops idle entries; if fewer than 1/16 of the shard
//!   were idle, it also drops the live entries closest to idle (the oldest),
//!   up to that 1/16, so a flood of new keys costs an amortised constant
//!   per key rather than a scan each.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::key::{mix, MixHasher};
use super::Decision;

/// One limiting algorithm over a small `Copy` state per key.
pub(super) trait Limit {
    type State: Copy;

    /// State for a key seen for the first time (a full bucket, an empty window).
    fn fresh(&self, now_ms: u64) -> Self::State;

    /// Decides one request and records it if admitted. Refused requests leave
    /// the decision-relevant state unchanged.
    fn admit(&self, state: &mut Self::State, now_ms: u64) -> Decision;

    /// Like [`Limit::admit`], counting `extra` requests made elsewhere (other
    /// nodes of a cluster). Only windows count them.
    fn admit_extra(&self, state: &mut Self::State, now_ms: u64, extra: u32) -> Decision {
        let _ = extra;
        self.admit(state, now_ms)
    }

    /// Requests this state counts now (windows: the rolling estimate).
    fn count(&self, state: &Self::State, now_ms: u64) -> u32 {
        let _ = (state, now_ms);
        0
    }

    /// Nanoseconds until `state` stops mattering (it would decide like a
    /// fresh state); 0 when it already has. Orders entries for eviction.
    fn remaining_ns(&self, state: &Self::State, now_ms: u64) -> u64;
}

/// Shards for zones large enough to use them all; smaller zones use fewer so
/// that each shard still holds at least [`MIN_SHARD_KEYS`] keys.
const MAX_SHARDS: usize = 64;
const MIN_SHARD_KEYS: usize = 16;
/// Bins of the histogram that picks which live entries to evict.
const BINS: usize = 64;

type KeyMap<S> = HashMap<u64, S, BuildHasherDefault<MixHasher>>;

pub(super) struct Table<L: Limit> {
    limit: L,
    shards: Box<[Shard<L::State>]>,
    /// `shards.len() - 1`; the length is a power of two.
    shard_mask: usize,
    /// Most entries one shard holds.
    shard_cap: usize,
}

/// Aligned so that two shards never share a cache line (no false sharing
/// between threads that hit neighbouring shards).
#[repr(align(64))]
struct Shard<S>(Mutex<Entries<S>>);

struct Entries<S> {
    map: KeyMap<S>,
    /// No entry can be idle before this (ns on the caller's clock): a lower
    /// bound kept on insert and recomputed on every scan, so that a map about
    /// to grow skips a scan that would find nothing to drop.
    next_idle_ns: u64,
    /// Requests refused (for `sysmanage_ratelimited_total{zone}`); counted
    /// under the shard lock already held, so no shared atomic.
    rejected: u64,
    /// Live entries dropped to respect `max_keys`: each is a client whose
    /// limit was forgotten early. Nonzero means `max_keys` is too small for
    /// the traffic (or a flood of distinct keys is under way).
    evicted_live: u64,
}

/// Counters of one zone, summed over its shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZoneStats {
    /// Keys currently held.
    pub keys: usize,
    /// Requests refused since the zone was built.
    pub rejected: u64,
    /// Keys with live state dropped because the zone was full.
    pub evicted_live: u64,
}

impl<L: Limit> Table<L> {
    /// `max_keys` must be at least 1 (the zone checks).
    pub(super) fn new(limit: L, max_keys: usize) -> Table<L> {
        let wanted = (max_keys / MIN_SHARD_KEYS).clamp(1, MAX_SHARDS);
        // Largest power of two not above `wanted`.
        let shards = 1usize << (usize::BITS - 1 - wanted.leading_zeros());
        let shard_cap = (max_keys / shards).max(1);
        let shards: Box<[_]> = (0..shards)
            .map(|_| {
                Shard(Mutex::new(Entries {
                    map: KeyMap::default(),
                    next_idle_ns: u64::MAX,
                    rejected: 0,
                    evicted_live: 0,
                }))
            })
            .collect();
        let shard_mask = shards.len() - 1;
        Table { limit, shards, shard_mask, shard_cap }
    }

    pub(super) fn limit(&self) -> &L {
        &self.limit
    }

    /// The most keys the table holds: `max_keys` rounded down to a multiple
    /// of the shard count.
    pub(super) fn capacity(&self) -> usize {
        self.shard_cap * self.shards.len()
    }

    fn shard(&self, key: u64) -> MutexGuard<'_, Entries<L::State>> {
        // Bits 32.. of the mixed key: the map uses the low bits for the
        // bucket and the top 7 as tag, so the shard choice is independent.
        let i = (mix(key) >> 32) as usize & self.shard_mask;
        // A panic while holding the lock cannot leave an entry half-written
        // (states are `Copy`, written whole), so a poisoned shard is usable.
        self.shards[i].0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keys whose count is at least `min` now, the highest first, at most
    /// `max` of them. Locks one shard at a time; not for the request path.
    pub(super) fn counts(&self, now_ms: u64, min: u32, max: usize) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let entries = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
            out.extend(
                entries.map.iter().map(|(k, s)| (*k, self.limit.count(s, now_ms))).filter(|(_, n)| *n >= min.max(1)),
            );
        }
        out.sort_unstable_by_key(|e| std::cmp::Reverse(e.1));
        out.truncate(max);
        out
    }

    pub(super) fn check(&self, key: u64, now_ms: u64) -> Decision {
        self.check_extra(key, now_ms, 0)
    }

    pub(super) fn check_extra(&self, key: u64, now_ms: u64, extra: u32) -> Decision {
        let mut entries = self.shard(key);
        let decision = match entries.map.get_mut(&key) {
            Some(state) => self.limit.admit_extra(state, now_ms, extra),
            None => {
                let mut state = self.limit.fresh(now_ms);
                let decision = self.limit.admit_extra(&mut state, now_ms, extra);
                // A fresh state refusing is impossible with a valid zone; if
                // it did, there would be nothing worth remembering.
                if decision.is_allowed() {
                    entries.make_room(&self.limit, self.shard_cap, now_ms);
                    let idle_at = now_ms.saturating_mul(1_000_000) + self.limit.remaining_ns(&state, now_ms);
                    entries.next_idle_ns = entries.next_idle_ns.min(idle_at);
                    entries.map.insert(key, state);
                }
                decision
            }
        };
        if !decision.is_allowed() {
            entries.rejected += 1;
        }
        decision
    }

    /// Drops every idle entry and gives back memory of maps that shrank to
    /// under a quarter of their size. Returns how many entries were dropped.
    /// Locks one shard at a time.
    pub(super) fn sweep(&self, now_ms: u64) -> usize {
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut entries = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
            dropped += entries.evict(&self.limit, now_ms, 0);
            let (len, cap) = (entries.map.len(), entries.map.capacity());
            if cap > 64 && cap > 4 * len {
                entries.map.shrink_to(2 * len);
            }
        }
        dropped
    }

    pub(super) fn stats(&self) -> ZoneStats {
        let mut stats = ZoneStats::default();
        for shard in self.shards.iter() {
            let entries = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
            stats.keys += entries.map.len();
            stats.rejected += entries.rejected;
            stats.evicted_live += entries.evicted_live;
        }
        stats
    }

    #[cfg(test)]
    pub(super) fn contains(&self, key: u64) -> bool {
        self.shard(key).map.contains_key(&key)
    }

    /// Sum of the shards' map capacities (memory held, in entries).
    #[cfg(test)]
    pub(super) fn allocated(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().unwrap_or_else(PoisonError::into_inner).map.capacity()).sum()
    }
}

impl<S: Copy> Entries<S> {
    /// Called before inserting a new key.
    fn make_room<L: Limit<State = S>>(&mut self, limit: &L, shard_cap: usize, now_ms: u64) {
        let len = self.map.len();
        if len >= shard_cap {
            self.evict(limit, now_ms, (shard_cap / 16).max(1));
        } else if len == self.map.capacity() && now_ms.saturating_mul(1_000_000) >= self.next_idle_ns {
            // About to grow: drop idle entries instead, if there are some.
            let dropped = self.evict(limit, now_ms, 0);
            if dropped < len / 16 {
                // Too few to be worth it: grow now rather than scan again on
                // the next insert. Stays within `shard_cap` (len < shard_cap).
                let additional = self.map.capacity() - self.map.len() + 1;
                self.map.reserve(additional);
            }
        }
    }

    /// Drops every idle entry and, when that is fewer than `want`, the live
    /// entries closest to idle until `want` are gone. Returns the number
    /// dropped. Three passes over the shard, no allocation.
    fn evict<L: Limit<State = S>>(&mut self, limit: &L, now_ms: u64, want: usize) -> usize {
        let before = self.map.len();
        let mut budget = 0usize;
        let mut threshold = 0u64;
        if want > 0 {
            let (mut idle, mut lo, mut hi) = (0usize, u64::MAX, 0u64);
            for state in self.map.values() {
                match limit.remaining_ns(state, now_ms) {
                    0 => idle += 1,
                    r => {
                        lo = lo.min(r);
                        hi = hi.max(r);
                    }
                }
            }
            budget = want.saturating_sub(idle);
            if budget > 0 && lo <= hi {
                // Histogram of remaining time over [lo, hi]; evict the lowest
                // bins until `budget` is covered. Within the last bin the
                // order is the map's (random), an error of at most one bin.
                let width = (hi - lo) / BINS as u64 + 1;
                let mut bins = [0usize; BINS];
                for state in self.map.values() {
                    let r = limit.remaining_ns(state, now_ms);
                    if r > 0 {
                        bins[((r - lo) / width) as usize] += 1;
                    }
                }
                let mut covered = 0;
                let mut last = BINS - 1;
                for (i, count) in bins.iter().enumerate() {
                    covered += count;
                    if covered >= budget {
                        last = i;
                        break;
                    }
                }
                threshold = lo + (last as u64 + 1) * width - 1;
            }
        }
        let mut next_idle = u64::MAX;
        let mut evicted_live = 0u64;
        self.map.retain(|_, state| {
            let r = limit.remaining_ns(state, now_ms);
            if r == 0 {
                return false;
            }
            if r <= threshold && budget > 0 {
                budget -= 1;
                evicted_live += 1;
                return false;
            }
            next_idle = next_idle.min(r);
            true
        });
        self.evicted_live += evicted_live;
        self.next_idle_ns = now_ms.saturating_mul(1_000_000).saturating_add(next_idle);
        before - self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::bucket::Bucket;
    use super::super::window::Window;
    use super::*;
    use std::time::Duration;

    fn bucket_table(per_second: f64, burst: u32, max_keys: usize) -> Table<Bucket> {
        Table::new(Bucket::new("t", per_second, burst).expect("valid"), max_keys)
    }

    #[test]
    fn shard_count_and_capacity_follow_max_keys() {
        for (max_keys, shards, capacity) in [
            (1, 1, 1),
            (10, 1, 10),
            (16, 1, 16),
            (40, 2, 40),
            (1_000, 32, 992),
            (1_024, 64, 1_024),
            (100_000, 64, 99_968),
        ] {
            let t = bucket_table(1.0, 0, max_keys);
            assert_eq!((t.shards.len(), t.capacity()), (shards, capacity), "max_keys {max_keys}");
            assert_eq!(t.shard_mask, shards - 1);
        }
    }

    #[test]
    fn keys_are_independent() {
        let t = bucket_table(1.0, 2, 1_000);
        assert_eq!((0..5).filter(|_| t.check(1, 0).is_allowed()).count(), 3);
        assert_eq!((0..5).filter(|_| t.check(2, 0).is_allowed()).count(), 3);
        assert!(!t.check(1, 0).is_allowed());
        assert_eq!(t.stats(), ZoneStats { keys: 2, rejected: 5, evicted_live: 0 });
    }

    #[test]
    fn sweep_drops_idle_keys_only_and_returns_memory() {
        // 10/s: one request is forgotten 100 ms later.
        let t = bucket_table(10.0, 4, 1_000_000);
        for key in 0..10_000 {
            t.check(key, 0);
        }
        // Five keys spend their burst at 50 ms: full again at 500 ms.
        for key in 0..5 {
            for _ in 0..5 {
                t.check(key, 50);
            }
        }
        let grown = t.allocated();
        assert_eq!(t.sweep(99), 0);
        assert_eq!(t.sweep(100), 9_995);
        assert_eq!(t.stats().keys, 5);
        assert!((0..5).all(|k| t.contains(k)));
        assert!(t.allocated() < grown / 16, "allocated {} of {grown}", t.allocated());
        assert_eq!(t.sweep(499), 0);
        assert_eq!(t.sweep(500), 5);
        assert_eq!(t.stats().keys, 0);
    }

    #[test]
    fn maps_about_to_grow_drop_idle_keys_instead() {
        // One new key per millisecond, each idle 1 ms later: without any
        // sweep call the table must stay near its smallest size.
        let t = bucket_table(1_000.0, 0, 1_000_000);
        for key in 0..100_000u64 {
            assert!(t.check(key, key).is_allowed());
        }
        assert!(t.stats().keys < 2_000, "{} keys held", t.stats().keys);
        assert_eq!(t.stats().evicted_live, 0);
    }

    #[test]
    fn max_keys_holds_under_a_flood_of_distinct_keys() {
        for max_keys in [1, 10, 1_000, 5_000] {
            let t = bucket_table(1.0, 5, max_keys);
            let cap = t.capacity();
            for key in 0..50_000u64 {
                assert!(t.check(key, 0).is_allowed());
                if key % 997 == 0 {
                    assert!(t.stats().keys <= cap);
                }
            }
            let stats = t.stats();
            assert!(stats.keys <= cap && stats.keys >= cap - cap / 16 - t.shards.len(), "{stats:?} cap {cap}");
            assert!(stats.evicted_live >= 50_000 - cap as u64);
        }
    }

    #[test]
    fn a_full_zone_evicts_idle_keys_then_the_oldest_first() {
        // 64 shards of 16. rate 1/min: a key is live 60 s after one request.
        let t = bucket_table(1.0 / 60.0, 0, 1_024);
        let idle: Vec<u64> = (0..256).collect();
        let old: Vec<u64> = (1_000..1_256).collect();
        for &k in &idle {
            t.check(k, 0); // idle from 60 s on
        }
        for &k in &old {
            t.check(k, 30_000); // live until 90 s
        }
        // At 70 s: 512 keys held, 256 of them idle. Flood 2,048 new keys.
        for k in 10_000..12_048u64 {
            t.check(k, 70_000);
        }
        assert!(idle.iter().all(|&k| !t.contains(k)), "idle keys kept");
        assert!(old.iter().all(|&k| !t.contains(k)), "older live keys kept while newer ones went");
        assert_eq!(t.stats().keys, 1_024);
        // An evicted key starts over: its limit was forgotten.
        assert!(t.check(1_000, 70_000).is_allowed());
    }

    #[test]
    fn a_refused_request_does_not_add_a_key_or_evict() {
        let t = Table::new(Window::new("t", 1, Duration::from_secs(1)).expect("valid"), 16);
        for k in 0..16 {
            t.check(k, 0);
        }
        assert!(!t.check(3, 0).is_allowed());
        assert_eq!(t.stats(), ZoneStats { keys: 16, rejected: 1, evicted_live: 0 });
    }

    #[test]
    fn concurrent_checks_respect_the_limit_per_key() {
        let t = std::sync::Arc::new(bucket_table(1.0, 99, 10_000));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || (0..1_000u64).filter(|i| t.check(i % 10, 0).is_allowed()).count())
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|h| h.join().expect("thread")).sum();
        assert_eq!(admitted, 10 * 100);
    }
}
