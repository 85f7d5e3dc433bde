//! Server selection: pure, synchronous algorithms over a pool's servers.
//!
//! Called by `proxy` on every request with the servers of one pool and a
//! predicate saying which of them may take traffic now (health, backup tier,
//! connection caps, retries already tried). Nothing here awaits, allocates or
//! does I/O; the only lock is the round-robin state, held for a few
//! arithmetic operations.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::model::Balance;

/// What an algorithm knows about one server.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The current (effective) weight: configured, overridden through the
    /// admin API, or ramping up after recovery. Written off the request path.
    pub weight_now: Arc<AtomicU32>,
    /// Stable hash of the server's identity (its name), for rendezvous hashing.
    pub key: u64,
    /// Requests in flight to this server, kept by the proxy.
    pub in_flight: Arc<AtomicU32>,
}

impl Peer {
    /// A peer with its own counters (tests and standalone use).
    pub fn new(name: &str, weight: u32) -> Self {
        Self::with_counters(name, Arc::new(AtomicU32::new(weight.max(1))), Arc::new(AtomicU32::new(0)))
    }

    /// A peer reading counters owned elsewhere (the server's runtime state).
    pub fn with_counters(name: &str, weight: Arc<AtomicU32>, in_flight: Arc<AtomicU32>) -> Self {
        Peer { weight_now: weight, key: hash_str(name), in_flight }
    }

    fn load(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn weight(&self) -> u32 {
        self.weight_now.load(Ordering::Relaxed).max(1)
    }
}

/// One pool's algorithm and its mutable selection state.
#[derive(Debug)]
pub struct Selector {
    algo: Balance,
    /// Smooth weighted round robin: each server's current weight.
    current: Mutex<Vec<i64>>,
}

impl Selector {
    pub fn new(algo: Balance, servers: usize) -> Self {
        Selector { algo, current: Mutex::new(vec![0; servers]) }
    }

    pub fn algorithm(&self) -> Balance {
        self.algo
    }

    /// Picks one of `peers` for which `eligible` holds; `client_hash` is the
    /// hash of the client IP (used by `source_hash`).
    pub fn pick(&self, peers: &[Peer], eligible: impl Fn(usize) -> bool, client_hash: u64) -> Option<usize> {
        match self.algo {
            Balance::RoundRobin => self.smooth_weighted(peers, &eligible),
            Balance::LeastConn => self.least_conn(peers, &eligible),
            Balance::SourceHash => rendezvous(peers, &eligible, client_hash),
            Balance::RandomTwo => random_two(peers, &eligible),
            Balance::Primary => (0..peers.len()).find(|&i| eligible(i)),
        }
    }

    /// nginx's smooth weighted round robin: every eligible server gains its
    /// weight, the highest is chosen and loses the total.
    fn smooth_weighted(&self, peers: &[Peer], eligible: &impl Fn(usize) -> bool) -> Option<usize> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.len() != peers.len() {
            current.resize(peers.len(), 0);
        }
        let mut total: i64 = 0;
        let mut best: Option<usize> = None;
        for (i, p) in peers.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            let w = i64::from(p.weight());
            current[i] += w;
            total += w;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            current[b] -= total;
        }
        best
    }

    /// Fewest in-flight requests per unit of weight; ties are broken by
    /// smooth weighted round robin among the tied servers (as nginx does), so
    /// an idle pool still shares by weight.
    fn least_conn(&self, peers: &[Peer], eligible: &impl Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<(u64, u64)> = None; // (load, weight) of the lowest ratio
        for (i, p) in peers.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            let (load, weight) = (u64::from(p.load()), u64::from(p.weight()));
            // load/weight < best_load/best_weight, compared without division.
            if best.is_none_or(|(bl, bw)| load * bw < bl * weight) {
                best = Some((load, weight));
            }
        }
        let (bl, bw) = best?;
        self.smooth_weighted(peers, &|i| {
            eligible(i) && u64::from(peers[i].load()) * bw == bl * u64::from(peers[i].weight())
        })
    }
}

/// Weighted rendezvous (highest random weight) hashing: each server scores
/// `weight / -ln(u)` with `u` uniform from hash(client, server). Removing a
/// server moves only the clients that scored highest on it.
pub fn rendezvous(peers: &[Peer], eligible: &impl Fn(usize) -> bool, client_hash: u64) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, p) in peers.iter().enumerate() {
        if !eligible(i) {
            continue;
        }
        let h = mix64(client_hash ^ p.key.rotate_left(17));
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = f64::from(p.weight()) / -u.ln();
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

/// Power of two choices: two distinct eligible servers drawn at random in
/// proportion to weight; the less loaded (relative to weight) wins, the first
/// drawn on a tie.
fn random_two(peers: &[Peer], eligible: &impl Fn(usize) -> bool) -> Option<usize> {
    let total: u64 = (0..peers.len()).filter(|&i| eligible(i)).map(|i| u64::from(peers[i].weight())).sum();
    if total == 0 {
        return None;
    }
    let draw = |skip: Option<usize>, total: u64| -> Option<usize> {
        let mut r = fastrand::u64(..total);
        for (i, p) in peers.iter().enumerate() {
            if !eligible(i) || Some(i) == skip {
                continue;
            }
            let w = u64::from(p.weight());
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    };
    let a = draw(None, total)?;
    let rest = total - u64::from(peers[a].weight());
    let Some(b) = (rest > 0).then(|| draw(Some(a), rest)).flatten() else {
        return Some(a);
    };
    let la = u64::from(peers[a].load()) * u64::from(peers[b].weight());
    let lb = u64::from(peers[b].load()) * u64::from(peers[a].weight());
    Some(if lb < la { b } else { a })
}

/// FNV-1a, then mixed: stable across runs and builds (unlike `DefaultHasher`).
pub fn hash_str(s: &str) -> u64 {
    hash_bytes(s.as_bytes())
}

pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// splitmix64 finaliser.
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(weights: &[u32]) -> Vec<Peer> {
        weights.iter().enumerate().map(|(i, w)| Peer::new(&format!("s{i}"), *w)).collect()
    }

    #[test]
    fn smooth_weighted_is_exact_and_interleaved() {
        let p = peers(&[5, 1, 1]);
        let s = Selector::new(Balance::RoundRobin, 3);
        let seq: Vec<usize> = (0..7).map(|_| s.pick(&p, |_| true, 0).unwrap()).collect();
        // nginx's documented sequence for weights 5,1,1: a a b a c a a
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn ineligible_servers_are_skipped() {
        let p = peers(&[1, 1, 1]);
        let s = Selector::new(Balance::RoundRobin, 3);
        for _ in 0..10 {
            assert_ne!(s.pick(&p, |i| i != 1, 0), Some(1));
        }
        assert_eq!(s.pick(&p, |_| false, 0), None);
        for algo in [Balance::LeastConn, Balance::SourceHash, Balance::RandomTwo, Balance::Primary] {
            let s = Selector::new(algo, 3);
            assert_eq!(s.pick(&p, |_| false, 7), None, "{algo}");
            assert_eq!(s.pick(&p, |i| i == 2, 7), Some(2), "{algo}");
        }
    }

    #[test]
    fn least_conn_weights_load() {
        let p = peers(&[1, 2]);
        p[0].in_flight.store(2, Ordering::Relaxed);
        p[1].in_flight.store(3, Ordering::Relaxed); // 3/2 < 2/1
        let s = Selector::new(Balance::LeastConn, 2);
        assert_eq!(s.pick(&p, |_| true, 0), Some(1));
        p[1].in_flight.store(5, Ordering::Relaxed);
        assert_eq!(s.pick(&p, |_| true, 0), Some(0));
    }

    #[test]
    fn random_two_prefers_less_loaded() {
        let p = peers(&[1, 1]);
        p[0].in_flight.store(10, Ordering::Relaxed);
        let s = Selector::new(Balance::RandomTwo, 2);
        for _ in 0..20 {
            assert_eq!(s.pick(&p, |_| true, 0), Some(1));
        }
    }

    #[test]
    fn rendezvous_moves_about_one_nth() {
        let p = peers(&[1, 1, 1, 1]);
        let before: Vec<usize> = (0..4000u64).map(|c| rendezvous(&p, &|_| true, mix64(c)).unwrap()).collect();
        let after: Vec<usize> = (0..4000u64).map(|c| rendezvous(&p, &|i| i != 3, mix64(c)).unwrap()).collect();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        // Only clients of the removed server move: about 1/4.
        assert!(before.iter().zip(&after).all(|(a, b)| a == b || *a == 3));
        assert!((800..1200).contains(&moved), "moved {moved}");
    }

    #[test]
    fn idle_pools_share_by_weight() {
        let p = peers(&[3, 3, 2]);
        for algo in [Balance::RoundRobin, Balance::LeastConn, Balance::RandomTwo] {
            let s = Selector::new(algo, 3);
            let mut counts = [0u32; 3];
            for _ in 0..8000 {
                counts[s.pick(&p, |_| true, 0).unwrap()] += 1;
            }
            for (c, want) in counts.iter().zip([3000.0, 3000.0, 2000.0]) {
                assert!((f64::from(*c) - want).abs() < 0.05 * 8000.0, "{algo}: {counts:?}");
            }
        }
    }

    #[test]
    fn primary_takes_first_available() {
        let p = peers(&[1, 1, 1]);
        let s = Selector::new(Balance::Primary, 3);
        assert_eq!(s.pick(&p, |_| true, 0), Some(0));
        assert_eq!(s.pick(&p, |i| i > 0, 0), Some(1));
    }
}
