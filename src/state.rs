//! The immutable snapshot everything on the request path reads: pools with
//! their servers, selectors and runtime counters, next to the validated
//! config. Built once per config; a reload builds a new one and swaps it in
//! (`ArcSwap` in `proxy`), reusing the runtime state of servers that stay.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::balance::{Peer, Selector};
use crate::config::{Config, PoolConfig};
use crate::health::PassiveHealth;

pub struct Snapshot {
    pub config: Arc<Config>,
    pub pools: Vec<Pool>,
}

pub struct Pool {
    pub cfg: PoolConfig,
    pub selector: Selector,
    pub peers: Vec<Peer>,
    pub servers: Vec<Server>,
}

pub struct Server {
    pub name: String,
    pub addr: SocketAddr,
    /// `host:port` for the upstream request URI.
    pub authority: http::uri::Authority,
    pub backup: bool,
    pub max_conns: u32,
    pub passive: Arc<PassiveHealth>,
    pub in_flight: Arc<AtomicU32>,
}

impl Snapshot {
    pub fn new(config: Config) -> Self {
        let pools = config.pools.iter().map(Pool::new).collect();
        Snapshot { config: Arc::new(config), pools }
    }
}

impl Pool {
    fn new(cfg: &PoolConfig) -> Self {
        let peers: Vec<Peer> = cfg.servers.iter().map(|s| Peer::new(&s.name, s.weight)).collect();
        let servers = cfg
            .servers
            .iter()
            .zip(&peers)
            .map(|(s, p)| Server {
                name: s.name.clone(),
                addr: s.addr,
                authority: s.addr.to_string().parse().unwrap_or_else(|_| http::uri::Authority::from_static("invalid")),
                backup: s.backup,
                max_conns: s.max_conns,
                passive: Arc::new(PassiveHealth::new(cfg.max_fails, cfg.fail_timeout)),
                in_flight: p.in_flight.clone(),
            })
            .collect();
        Pool { selector: Selector::new(cfg.balance, cfg.servers.len()), peers, servers, cfg: cfg.clone() }
    }

    /// Whether server `i` may take a new request at `now_ms`.
    pub fn available(&self, i: usize, now_ms: u64) -> bool {
        let s = &self.servers[i];
        !s.passive.is_down(now_ms) && (s.max_conns == 0 || s.in_flight.load(Ordering::Relaxed) < s.max_conns)
    }

    /// Chooses a server for a request. Backups are used only while no
    /// non-backup server is available. Servers in `tried` are avoided; when
    /// every available one was tried, any but the last tried may repeat.
    pub fn select(&self, client_hash: u64, tried: &[usize], now_ms: u64) -> Option<usize> {
        let last = tried.last().copied();
        for backup in [false, true] {
            let tier = |i: usize| self.servers[i].backup == backup && self.available(i, now_ms);
            if let Some(i) = self.selector.pick(&self.peers, |i| tier(i) && !tried.contains(&i), client_hash) {
                return Some(i);
            }
            if let Some(i) = self.selector.pick(&self.peers, |i| tier(i) && Some(i) != last, client_hash) {
                return Some(i);
            }
            if (0..self.servers.len()).any(tier) {
                // The only available server of this tier is the one that just
                // failed: do not fall through to backups, do not repeat it.
                return None;
            }
        }
        None
    }
}
