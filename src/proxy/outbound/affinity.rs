//! Sticky sessions on the request path: which server a request with an
//! affinity key goes to. Reads and writes only the in-memory session table;
//! records to persist are queued to the store's writer thread, never awaited.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::config::{AffinityConfig, AffinityPolicy};
use crate::metrics::COUNTERS;
use crate::model::Balance;
use crate::sessions::{unix_now_ms, AffinityKey, Candidate, Policy, Sessions};
use crate::state::Pool;

/// A pool's affinity settings and the node's sessions.
pub struct Affinity<'a> {
    pub key: &'a AffinityKey,
    pub cfg: &'a AffinityConfig,
    pub sessions: &'a Arc<Sessions>,
}

impl Affinity<'_> {
    /// The server for `key`: its recorded server while that one can take
    /// sessions (a draining server keeps its own); otherwise a server chosen
    /// by the policy (in a `primary` pool: the active server), recorded with
    /// the pool's TTL.
    pub fn server_for(&self, pool: &Pool, key: &str, now_ms: u64) -> Option<usize> {
        let table = &self.sessions.table;
        let name = &pool.cfg.name;
        let unix = unix_now_ms();
        let mut reassign = false;
        if let Some(owner) = table.get(name, key, unix) {
            if let Some(i) = pool.servers.iter().position(|s| *s.name == *owner) {
                if pool.session_available(i, now_ms) {
                    COUNTERS.affinity_hits.fetch_add(1, Ordering::Relaxed);
                    // Each use extends the TTL; the record is written only
                    // once less than half of it is left.
                    if let crate::sessions::Touch::Refreshed(rec) = table.touch(name, key, &owner, self.cfg.ttl, unix) {
                        self.sessions.persist(rec);
                    }
                    return Some(i);
                }
            }
            reassign = true;
        }
        let pick = if pool.cfg.balance == Balance::Primary {
            // One active server for every key: SysManage reaches an agent
            // only through the server process that holds its WebSocket, so
            // new agents go where the API goes, whatever the policy.
            pool.select(0, &[], now_ms)?
        } else {
            self.policy_pick(pool, key, now_ms)?
        };
        let server = &pool.servers[pick].name;
        if reassign {
            COUNTERS.affinity_reassigned.fetch_add(1, Ordering::Relaxed);
            let rec = table.assign(name, key, server, self.cfg.ttl, unix);
            self.sessions.persist(rec);
            Some(pick)
        } else {
            COUNTERS.affinity_misses.fetch_add(1, Ordering::Relaxed);
            let claim = table.claim(name, key, server, self.cfg.ttl, unix);
            if let Some(rec) = claim.written {
                self.sessions.persist(rec);
            }
            // Another request created the key first: follow it if it can.
            match pool.servers.iter().position(|s| *s.name == *claim.server) {
                Some(i) if pool.session_available(i, now_ms) => Some(i),
                _ => Some(pick),
            }
        }
    }

    /// A server for a new key by the pool's policy (`least_loaded` or
    /// `hash`), among servers taking new traffic.
    fn policy_pick(&self, pool: &Pool, key: &str, now_ms: u64) -> Option<usize> {
        let counts = self.sessions.table.counts_per_server(&pool.cfg.name);
        let candidates: Vec<Candidate> = pool
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| Candidate {
                index: i,
                server_key: pool.peers[i].key,
                weight: s.state.effective_weight(),
                sessions: counts.get(&s.name).copied().unwrap_or(0),
                // This node's connections and the other nodes' (cluster).
                connections: s.state.in_flight.load(Ordering::Relaxed) as usize
                    + s.state.remote_connections.load(Ordering::Relaxed) as usize,
                // New sessions only on servers taking new traffic (not draining).
                available: pool.available(i, now_ms) && !s.backup,
            })
            .collect();
        let policy = match self.cfg.policy {
            AffinityPolicy::LeastLoaded => Policy::LeastLoaded,
            AffinityPolicy::Hash => Policy::Hash,
        };
        policy.pick(&candidates, key).or_else(|| {
            // Every non-backup server is out: backups take new sessions.
            let backups: Vec<Candidate> =
                candidates.iter().map(|c| Candidate { available: pool.available(c.index, now_ms), ..*c }).collect();
            policy.pick(&backups, key)
        })
    }

    /// The request ended up on `idx` after a retry: the key follows it.
    pub fn moved(&self, pool: &Pool, key: &str, idx: usize) {
        let rec = self.sessions.table.assign(&pool.cfg.name, key, &pool.servers[idx].name, self.cfg.ttl, unix_now_ms());
        COUNTERS.affinity_reassigned.fetch_add(1, Ordering::Relaxed);
        self.sessions.persist(rec);
    }
}
