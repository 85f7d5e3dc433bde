//! Replay protection and fragment reassembly: bounded, time-driven state
//! behind the decoder. Pure and synchronous; time is passed in (unix ms).
//!
//! # Replay rules
//!
//! A frame sent at `t` (sender's clock) is accepted at receiver time `now`
//! only if `now - window <= t <= now + max_skew`, and if its
//! `(message id, fragment index)` was not accepted before. Ids are kept
//! until `t + window`, after which the time rule rejects the frame anyway.
//!
//! The id cache is global (not per source address), so a datagram replayed
//! from another address is caught too. It is bounded by `capacity`: when full,
//! the oldest id is evicted and its timestamp becomes a floor; frames sent at
//! or before the floor are then rejected as stale, so eviction never opens a
//! replay hole. At gossip rates (a few datagrams per peer per interval) the
//! default 65,536 ids cover the 30 s window many times over; only holders of
//! the key can insert ids.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use super::wire::{DropReason, Frame, MAX_FRAGMENTS};

/// Time window and bounds of the replay check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayConfig {
    /// Frames older than this are stale.
    pub window: Duration,
    /// Frames from further in the future than this are rejected.
    pub max_skew: Duration,
    /// Most message ids remembered at once.
    pub capacity: usize,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig { window: Duration::from_secs(30), max_skew: Duration::from_secs(30), capacity: 65_536 }
    }
}

/// Remembers accepted `(message id, fragment index)` pairs within the window.
#[derive(Debug)]
pub struct ReplayCache {
    config: ReplayConfig,
    seen: HashSet<(u64, u8)>,
    /// Insertion order: (forget after, sent at, id).
    order: VecDeque<(u64, u64, (u64, u8))>,
    /// Frames sent at or before this were possibly evicted: rejected.
    floor_ms: Option<u64>,
}

impl ReplayCache {
    pub fn new(config: ReplayConfig) -> Self {
        ReplayCache { config, seen: HashSet::new(), order: VecDeque::new(), floor_ms: None }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Applies the replay rules to one frame and remembers it if accepted.
    pub fn check(&mut self, message_id: u64, index: u8, sent_at_ms: u64, now_ms: u64) -> Result<(), DropReason> {
        let window = self.config.window.as_millis() as u64;
        let skew = self.config.max_skew.as_millis() as u64;
        if sent_at_ms.saturating_add(window) < now_ms {
            return Err(DropReason::Stale);
        }
        if sent_at_ms > now_ms.saturating_add(skew) {
            return Err(DropReason::Future);
        }
        while let Some(&(forget_at, _, id)) = self.order.front() {
            if forget_at > now_ms {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&id);
        }
        let id = (message_id, index);
        if self.seen.contains(&id) {
            return Err(DropReason::Replayed);
        }
        if self.floor_ms.is_some_and(|floor| sent_at_ms <= floor) {
            return Err(DropReason::Stale);
        }
        if self.seen.len() >= self.config.capacity.max(1) {
            if let Some((_, evicted_sent_at, evicted)) = self.order.pop_front() {
                self.seen.remove(&evicted);
                self.floor_ms = Some(self.floor_ms.unwrap_or(0).max(evicted_sent_at));
            }
        }
        self.seen.insert(id);
        self.order.push_back((sent_at_ms.saturating_add(window).saturating_add(1), sent_at_ms, id));
        Ok(())
    }
}

/// Most messages waiting for their other fragment.
const MAX_PARTIALS: usize = 64;

#[derive(Debug)]
struct Partial {
    from: SocketAddr,
    message_id: u64,
    first_seen_ms: u64,
    count: u8,
    parts: [Option<Vec<u8>>; MAX_FRAGMENTS as usize],
}

/// Joins fragmented messages. Bounded: at most [`MAX_PARTIALS`] incomplete
/// messages, each forgotten after the replay window.
#[derive(Debug, Default)]
pub struct Reassembly {
    partials: VecDeque<Partial>,
}

impl Reassembly {
    pub fn new() -> Self {
        Reassembly::default()
    }

    pub fn pending(&self) -> usize {
        self.partials.len()
    }

    /// Adds one (already authenticated and replay-checked) fragment; returns
    /// the whole message once every fragment is there.
    pub fn add(
        &mut self,
        from: SocketAddr,
        frame: &Frame<'_>,
        now_ms: u64,
        window: Duration,
    ) -> Result<Option<Vec<u8>>, DropReason> {
        let window = window.as_millis() as u64;
        self.partials.retain(|p| p.first_seen_ms.saturating_add(window) >= now_ms);
        let pos = self.partials.iter().position(|p| p.from == from && p.message_id == frame.message_id);
        let pos = match pos {
            Some(pos) => {
                if self.partials[pos].count != frame.count {
                    self.partials.remove(pos);
                    return Err(DropReason::Malformed);
                }
                pos
            }
            None => {
                if self.partials.len() >= MAX_PARTIALS {
                    self.partials.pop_front();
                }
                self.partials.push_back(Partial {
                    from,
                    message_id: frame.message_id,
                    first_seen_ms: now_ms,
                    count: frame.count,
                    parts: Default::default(),
                });
                self.partials.len() - 1
            }
        };
        let partial = &mut self.partials[pos];
        partial.parts[usize::from(frame.index)] = Some(frame.payload.to_vec());
        let count = usize::from(partial.count);
        if partial.parts[..count].iter().all(Option::is_some) {
            let partial = self.partials.remove(pos).expect("position is in range");
            let mut whole = Vec::new();
            for part in partial.parts.into_iter().take(count).flatten() {
                whole.extend_from_slice(&part);
            }
            return Ok(Some(whole));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn cache(capacity: usize) -> ReplayCache {
        ReplayCache::new(ReplayConfig { capacity, ..ReplayConfig::default() })
    }

    #[test]
    fn window_and_skew() {
        let mut c = cache(100);
        assert_eq!(c.check(1, 0, NOW - 30_000, NOW), Ok(()));
        assert_eq!(c.check(2, 0, NOW - 30_001, NOW), Err(DropReason::Stale));
        assert_eq!(c.check(3, 0, NOW + 30_000, NOW), Ok(()));
        assert_eq!(c.check(4, 0, NOW + 30_001, NOW), Err(DropReason::Future));
    }

    #[test]
    fn duplicates_are_replays_until_the_window_passes() {
        let mut c = cache(100);
        assert_eq!(c.check(7, 0, NOW, NOW), Ok(()));
        assert_eq!(c.check(7, 0, NOW, NOW + 1), Err(DropReason::Replayed));
        // The other fragment of the same message is not a replay.
        assert_eq!(c.check(7, 1, NOW, NOW + 1), Ok(()));
        assert_eq!(c.check(7, 0, NOW, NOW + 30_000), Err(DropReason::Replayed));
        // Once the time rule rejects it, the id may be forgotten.
        assert_eq!(c.check(7, 0, NOW, NOW + 30_001), Err(DropReason::Stale));
        assert_eq!(c.check(8, 0, NOW + 30_001, NOW + 30_001), Ok(()));
        assert!(c.len() <= 2, "expired ids are forgotten: {}", c.len());
    }

    #[test]
    fn overflow_raises_a_floor_instead_of_forgetting() {
        let mut c = cache(4);
        for i in 0..4 {
            assert_eq!(c.check(i, 0, NOW + i, NOW + 10), Ok(()));
        }
        // A fifth id evicts id 0 (sent at NOW): the floor becomes NOW.
        assert_eq!(c.check(100, 0, NOW + 5, NOW + 10), Ok(()));
        assert_eq!(c.len(), 4);
        assert_eq!(c.check(0, 0, NOW, NOW + 10), Err(DropReason::Stale), "evicted id stays refused");
        assert_eq!(c.check(200, 0, NOW, NOW + 10), Err(DropReason::Stale), "at the floor");
        assert_eq!(c.check(1, 0, NOW + 1, NOW + 10), Err(DropReason::Replayed));
        assert_eq!(c.check(300, 0, NOW + 6, NOW + 10), Ok(()));
    }

    fn frame(id: u64, index: u8, count: u8, payload: &[u8]) -> Frame<'_> {
        Frame { sent_at_ms: NOW, message_id: id, index, count, payload }
    }

    #[test]
    fn reassembles_in_any_order() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let w = Duration::from_secs(30);
        let mut r = Reassembly::new();
        assert_eq!(r.add(a, &frame(1, 1, 2, b"world"), NOW, w), Ok(None));
        // Same id from another address does not complete it.
        assert_eq!(r.add(b, &frame(1, 0, 2, b"x"), NOW, w), Ok(None));
        assert_eq!(r.add(a, &frame(1, 0, 2, b"hello "), NOW, w), Ok(Some(b"hello world".to_vec())));
        assert_eq!(r.pending(), 1);
        // Single-fragment messages pass straight through.
        assert_eq!(r.add(a, &frame(2, 0, 1, b"one"), NOW, w), Ok(Some(b"one".to_vec())));
        // Partials expire after the window.
        assert_eq!(r.add(a, &frame(3, 0, 2, b"x"), NOW + 30_001, w), Ok(None));
        assert_eq!(r.pending(), 1);
    }

    #[test]
    fn reassembly_is_bounded_and_rejects_inconsistent_counts() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let w = Duration::from_secs(30);
        let mut r = Reassembly::new();
        for id in 0..1000 {
            r.add(a, &frame(id, 0, 2, b"x"), NOW, w).unwrap();
        }
        assert_eq!(r.pending(), MAX_PARTIALS);
        assert_eq!(r.add(a, &frame(999, 0, 1, b"x"), NOW, w), Err(DropReason::Malformed));
        assert_eq!(r.pending(), MAX_PARTIALS - 1);
    }
}
