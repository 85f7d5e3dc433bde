//! The immutable snapshot everything on the request path reads: pools with
//! their servers, selectors and runtime state, next to the validated config.
//! Built once per config by `control`; a reload builds a new one and swaps it
//! in, reusing the runtime state ([`ServerState`]) of servers that stay, kept
//! in the [`Registry`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::balance::{Peer, Selector};
use crate::config::{Config, PoolConfig};
use crate::health::{AdminState, EventLog, ServerState};

pub struct Snapshot {
    pub config: Arc<Config>,
    pub pools: Vec<Pool>,
    pub events: Arc<EventLog>,
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
    pub state: Arc<ServerState>,
}

/// Runtime state of every server, by (pool, server name, address), kept
/// across reloads.
#[derive(Default)]
pub struct Registry {
    servers: HashMap<(String, String, SocketAddr), Arc<ServerState>>,
}

impl Registry {
    /// The state for a configured server, reused if it existed before.
    fn server(&mut self, pool: &PoolConfig, i: usize) -> Arc<ServerState> {
        let s = &pool.servers[i];
        let key = (pool.name.clone(), s.name.clone(), s.addr);
        let state = self
            .servers
            .entry(key)
            .or_insert_with(|| Arc::new(ServerState::new(&pool.name, &s.name, s.addr, s.weight)));
        state.configure(s.weight, pool.slow_start.as_millis() as u64, pool.checks.len());
        state.passive.set_params(pool.max_fails, pool.fail_timeout);
        state.clone()
    }

    /// Forgets servers that are not in `config` any more.
    fn retain(&mut self, config: &Config) {
        self.servers.retain(|(pool, name, addr), _| {
            config.pools.iter().any(|p| &p.name == pool && p.servers.iter().any(|s| &s.name == name && &s.addr == addr))
        });
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<ServerState>> {
        self.servers.values()
    }
}

impl Snapshot {
    pub fn new(config: Config, registry: &mut Registry, events: Arc<EventLog>) -> Self {
        registry.retain(&config);
        let pools = config.pools.iter().map(|p| Pool::new(p, registry)).collect();
        Snapshot { config: Arc::new(config), pools, events }
    }

    /// A snapshot with fresh runtime state (tests, tools).
    pub fn standalone(config: Config) -> Self {
        Self::new(config, &mut Registry::default(), Arc::new(EventLog::new(200)))
    }

    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.cfg.name == name)
    }
}

impl Pool {
    fn new(cfg: &PoolConfig, registry: &mut Registry) -> Self {
        let mut peers = Vec::with_capacity(cfg.servers.len());
        let mut servers = Vec::with_capacity(cfg.servers.len());
        for (i, s) in cfg.servers.iter().enumerate() {
            let state = registry.server(cfg, i);
            peers.push(Peer::with_counters(&s.name, state.effective_weight.clone(), state.in_flight.clone()));
            servers.push(Server {
                name: s.name.clone(),
                addr: s.addr,
                authority: s.addr.to_string().parse().unwrap_or_else(|_| http::uri::Authority::from_static("invalid")),
                backup: s.backup,
                max_conns: s.max_conns,
                state,
            });
        }
        Pool { selector: Selector::new(cfg.balance, cfg.servers.len()), peers, servers, cfg: cfg.clone() }
    }

    /// Whether server `i` may take a new request at `now_ms`: healthy by its
    /// checks, not out by passive health, in normal admin state, under its
    /// connection cap.
    pub fn available(&self, i: usize, now_ms: u64) -> bool {
        let s = &self.servers[i];
        s.state.is_up()
            && s.state.admin_state() == AdminState::Normal
            && !s.state.passive.is_down(now_ms)
            && (s.max_conns == 0 || s.state.in_flight.load(Ordering::Relaxed) < s.max_conns)
    }

    /// Whether server `i` may take requests of sessions already pinned to it:
    /// like [`Pool::available`], but a draining server keeps its sessions.
    /// In a `primary` pool only the active server keeps them while it is
    /// available: SysManage reaches an agent only through the server that
    /// holds its WebSocket, so agents follow the API when the active server
    /// changes (a failed check in another pool of the group, a drain).
    pub fn session_available(&self, i: usize, now_ms: u64) -> bool {
        if self.cfg.balance == crate::model::Balance::Primary {
            let active = self.servers.iter().position(|s| s.state.active_primary.load(Ordering::Relaxed));
            if active.is_some_and(|a| a != i && self.available(a, now_ms)) {
                return false;
            }
        }
        let s = &self.servers[i];
        s.state.is_up()
            && s.state.admin_state() != AdminState::Maintenance
            && !s.state.passive.is_down(now_ms)
            && (s.max_conns == 0 || s.state.in_flight.load(Ordering::Relaxed) < s.max_conns)
    }

    /// Servers that could take traffic now, of all.
    pub fn available_count(&self, now_ms: u64) -> usize {
        (0..self.servers.len()).filter(|&i| self.available(i, now_ms)).count()
    }

    /// Chooses a server for a request. Backups are used only while no
    /// non-backup server is available, or when every available non-backup
    /// server has already failed this request. Servers in `tried` are
    /// avoided; when every available one was tried, any but the last tried
    /// may repeat.
    pub fn select(&self, client_hash: u64, tried: &[usize], now_ms: u64) -> Option<usize> {
        if self.cfg.balance == crate::model::Balance::Primary {
            // The agreed active server while this node can use it.
            let active = self.servers.iter().position(|s| s.state.active_primary.load(Ordering::Relaxed));
            if let Some(a) = active.filter(|&a| !tried.contains(&a) && self.available(a, now_ms)) {
                return Some(a);
            }
        }
        let last = tried.last().copied();
        let tier = |backup: bool, i: usize| self.servers[i].backup == backup && self.available(i, now_ms);
        let untried =
            |backup: bool| self.selector.pick(&self.peers, |i| tier(backup, i) && !tried.contains(&i), client_hash);
        let again = |backup: bool| self.selector.pick(&self.peers, |i| tier(backup, i) && Some(i) != last, client_hash);
        untried(false).or_else(|| untried(true)).or_else(|| again(false)).or_else(|| again(true))
    }
}

/// One server of a `primary` pool as the nodes see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryVotes {
    pub backup: bool,
    /// Nodes that see the server up (this node included).
    pub up: usize,
    /// Nodes that reported on the server (this node included).
    pub voters: usize,
}

impl PrimaryVotes {
    /// Up by the majority of the nodes that reported on it.
    pub fn majority_up(&self) -> bool {
        self.up * 2 > self.voters
    }
}

/// The active server of a `primary` pool: with `failback`, the first server
/// the majority sees up (non-backups first, in configured order); without,
/// the current one while the majority sees it up, else the one `preferred`
/// by the peers (a restarted node adopts their choice), else the first.
/// Pure: every node with the same views picks the same server.
pub fn choose_primary(
    servers: &[PrimaryVotes],
    current: Option<usize>,
    preferred: Option<usize>,
    failback: bool,
) -> Option<usize> {
    let ok = |i: usize| servers.get(i).is_some_and(PrimaryVotes::majority_up);
    let first = || {
        let tier = |backup: bool| (0..servers.len()).find(|&i| servers[i].backup == backup && ok(i));
        tier(false).or_else(|| tier(true))
    };
    if failback {
        return first();
    }
    current.filter(|&c| ok(c)).or_else(|| preferred.filter(|&p| ok(p))).or_else(first)
}

#[cfg(test)]
mod primary_tests {
    use super::*;

    fn v(up: usize, voters: usize) -> PrimaryVotes {
        PrimaryVotes { backup: false, up, voters }
    }

    #[test]
    fn majority_of_reporting_nodes_decides() {
        assert!(v(2, 3).majority_up());
        assert!(!v(1, 2).majority_up(), "a tie is not a majority");
        assert!(v(1, 1).majority_up(), "a standalone node is its own majority");
        assert!(!v(0, 0).majority_up());
    }

    #[test]
    fn no_failback_keeps_the_current_server() {
        let all_up = [v(3, 3), v(3, 3)];
        assert_eq!(choose_primary(&all_up, None, None, false), Some(0));
        assert_eq!(choose_primary(&all_up, Some(1), None, false), Some(1), "stays on the second after failover");
        assert_eq!(choose_primary(&all_up, Some(1), None, true), Some(0), "failback returns to the first");
        let first_down = [v(1, 3), v(3, 3)];
        assert_eq!(
            choose_primary(&first_down, Some(0), None, false),
            Some(1),
            "fails over when the majority sees it down"
        );
    }

    #[test]
    fn a_new_node_adopts_the_peers_choice_and_backups_come_last() {
        let all_up = [v(3, 3), v(3, 3)];
        assert_eq!(choose_primary(&all_up, None, Some(1), false), Some(1));
        assert_eq!(choose_primary(&[v(0, 3), v(3, 3)], None, Some(0), false), Some(1), "not a server that is down");
        let with_backup = [PrimaryVotes { backup: true, up: 3, voters: 3 }, v(0, 3), v(2, 3)];
        assert_eq!(choose_primary(&with_backup, None, None, false), Some(2));
        let only_backup = [PrimaryVotes { backup: true, up: 3, voters: 3 }, v(0, 3)];
        assert_eq!(choose_primary(&only_backup, None, None, false), Some(0));
        assert_eq!(choose_primary(&[v(0, 3)], Some(0), None, false), None);
    }
}
