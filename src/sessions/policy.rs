//! Which server a new session goes to: pure functions over a pool's
//! candidates, called by `proxy` when a key has no live owner (or its owner
//! is unavailable). The caller fills in availability (health, backup tier,
//! caps) and loads (session counts from the table, connections in flight).

use std::fmt;

use crate::balance::{hash_str, mix64};

/// How a pool assigns new sessions (`affinity.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Fewest sessions + connections relative to weight, cluster-wide (the
    /// session counts include peers' records).
    LeastLoaded,
    /// Rendezvous hash of the key: every node picks the same server without
    /// sharing state, and a server leaving moves only its own keys.
    Hash,
}

impl Policy {
    pub const NAMES: &'static str = "least_loaded, hash";

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "least_loaded" => Some(Policy::LeastLoaded),
            "hash" => Some(Policy::Hash),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::LeastLoaded => "least_loaded",
            Policy::Hash => "hash",
        }
    }

    /// The chosen candidate's `index`, or `None` if none is available.
    pub fn pick(self, candidates: &[Candidate], key: &str) -> Option<usize> {
        match self {
            Policy::LeastLoaded => least_loaded(candidates),
            Policy::Hash => hash(candidates, key),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One server as the policies see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The server's index in its pool; what the policies return.
    pub index: usize,
    /// Stable hash of the server's name ([`crate::balance::Peer::key`]), so
    /// `hash` keeps its choices when servers are reordered in the config.
    pub server_key: u64,
    /// Relative capacity; 0 is treated as 1.
    pub weight: u32,
    /// Live sessions pinned to the server.
    pub sessions: usize,
    /// Connections or requests in flight to it.
    pub connections: usize,
    pub available: bool,
}

/// The available candidate with the fewest `sessions + connections` per unit
/// of weight; the first in order on a tie.
pub fn least_loaded(candidates: &[Candidate]) -> Option<usize> {
    let mut best: Option<(&Candidate, u128)> = None;
    for c in candidates.iter().filter(|c| c.available) {
        let load = c.sessions as u128 + c.connections as u128;
        // load/weight < best_load/best_weight, compared without division.
        if best.is_none_or(|(b, bl)| load * weight(b) < bl * weight(c)) {
            best = Some((c, load));
        }
    }
    best.map(|(c, _)| c.index)
}

/// Weighted rendezvous hashing of `key` over the available candidates (the
/// same scoring as `balance::rendezvous` uses for client IPs).
pub fn hash(candidates: &[Candidate], key: &str) -> Option<usize> {
    let key_hash = hash_str(key);
    let mut best: Option<(usize, f64)> = None;
    for c in candidates.iter().filter(|c| c.available) {
        let h = mix64(key_hash ^ c.server_key.rotate_left(17));
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = weight(c) as f64 / -u.ln();
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((c.index, score));
        }
    }
    best.map(|(i, _)| i)
}

fn weight(c: &Candidate) -> u128 {
    u128::from(c.weight.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(index: usize, weight: u32, sessions: usize, connections: usize) -> Candidate {
        Candidate { index, server_key: hash_str(&format!("s{index}")), weight, sessions, connections, available: true }
    }

    #[test]
    fn policy_names_round_trip() {
        for p in [Policy::LeastLoaded, Policy::Hash] {
            assert_eq!(Policy::parse(p.as_str()), Some(p));
        }
        assert_eq!(Policy::parse("sticky"), None);
    }

    #[test]
    fn least_loaded_counts_sessions_and_connections() {
        let cs = [cand(0, 1, 5, 0), cand(1, 1, 2, 2), cand(2, 1, 0, 6)];
        assert_eq!(least_loaded(&cs), Some(1));
    }

    #[test]
    fn least_loaded_weighs_load() {
        // 6/3 = 2 < 3/1 = 3
        let cs = [cand(0, 1, 3, 0), cand(1, 3, 6, 0)];
        assert_eq!(least_loaded(&cs), Some(1));
        // weight 0 behaves as 1
        let cs = [cand(0, 0, 1, 0), cand(1, 1, 2, 0)];
        assert_eq!(least_loaded(&cs), Some(0));
    }

    #[test]
    fn least_loaded_ties_go_to_the_first_and_skips_unavailable() {
        let mut cs = [cand(0, 1, 2, 0), cand(1, 1, 2, 0), cand(2, 1, 2, 0)];
        assert_eq!(least_loaded(&cs), Some(0));
        cs[0].available = false;
        assert_eq!(least_loaded(&cs), Some(1));
        cs.iter_mut().for_each(|c| c.available = false);
        assert_eq!(least_loaded(&cs), None);
        assert_eq!(least_loaded(&[]), None);
    }

    #[test]
    fn least_loaded_spreads_a_burst_of_new_sessions() {
        // Simulates the table's counts growing as each pick is recorded.
        let mut cs = [cand(0, 2, 0, 0), cand(1, 1, 0, 0), cand(2, 1, 0, 0)];
        for _ in 0..400 {
            let i = least_loaded(&cs).unwrap();
            cs[i].sessions += 1;
        }
        assert_eq!([cs[0].sessions, cs[1].sessions, cs[2].sessions], [200, 100, 100]);
    }

    #[test]
    fn hash_is_stable_and_ignores_load_and_order() {
        let cs = [cand(0, 1, 0, 0), cand(1, 1, 0, 0), cand(2, 1, 0, 0)];
        let picks: Vec<_> = (0..100).map(|k| hash(&cs, &format!("host{k}"))).collect();
        let loaded = [cand(0, 1, 99, 9), cand(1, 1, 0, 0), cand(2, 1, 50, 0)];
        let reordered = [cs[2], cs[0], cs[1]];
        for (k, pick) in picks.iter().enumerate() {
            let key = format!("host{k}");
            assert_eq!(hash(&loaded, &key), *pick);
            assert_eq!(hash(&reordered, &key), *pick);
        }
        // Every server gets some keys.
        for i in 0..3 {
            assert!(picks.contains(&Some(i)));
        }
        assert_eq!(Policy::Hash.pick(&cs, "host1"), picks[1]);
    }

    #[test]
    fn hash_moves_only_the_keys_of_an_unavailable_server() {
        let mut cs = [cand(0, 1, 0, 0), cand(1, 1, 0, 0), cand(2, 1, 0, 0), cand(3, 1, 0, 0)];
        let keys: Vec<String> = (0..2000).map(|k| format!("agent-{k}.example.com")).collect();
        let before: Vec<_> = keys.iter().map(|k| hash(&cs, k).unwrap()).collect();
        cs[3].available = false;
        let after: Vec<_> = keys.iter().map(|k| hash(&cs, k).unwrap()).collect();
        assert!(before.iter().zip(&after).all(|(b, a)| b == a || *b == 3));
        let moved = before.iter().filter(|b| **b == 3).count();
        assert!((350..650).contains(&moved), "moved {moved}");
        cs.iter_mut().for_each(|c| c.available = false);
        assert_eq!(hash(&cs, "x"), None);
    }

    #[test]
    fn hash_respects_weight() {
        let cs = [cand(0, 3, 0, 0), cand(1, 1, 0, 0)];
        let n0 = (0..4000).filter(|k| hash(&cs, &format!("k{k}")) == Some(0)).count();
        assert!((2800..3200).contains(&n0), "{n0}");
    }
}
