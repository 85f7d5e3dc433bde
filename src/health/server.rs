//! The runtime state of one server: health (per-check failure bits), admin
//! state (draining, maintenance), weights (configured, overridden, slow-start
//! ramp), in-flight requests and statistics.
//!
//! Shared by `Arc` between the snapshot the proxy reads, the health checks
//! that write it, and the admin API. Everything is an atomic: the proxy reads
//! it with plain loads; writers (health checks, admin actions) store. It
//! survives reloads: a new snapshot reuses the state of servers that stay.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crate::metrics::Histogram;

/// What an operator set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    /// Takes traffic when healthy.
    Normal,
    /// No new requests or sessions; what is open finishes.
    Draining,
    /// No traffic at all.
    Maintenance,
}

impl AdminState {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Normal => "normal",
            AdminState::Draining => "draining",
            AdminState::Maintenance => "maintenance",
        }
    }
    fn from_u8(v: u8) -> Self {
        match v {
            1 => AdminState::Draining,
            2 => AdminState::Maintenance,
            _ => AdminState::Normal,
        }
    }
    fn to_u8(self) -> u8 {
        match self {
            AdminState::Normal => 0,
            AdminState::Draining => 1,
            AdminState::Maintenance => 2,
        }
    }
}

/// What an in-place upgrade carries of a server to the new process, as
/// HAProxy's server-state file does across a reload: what the operator set
/// (admin state, a weight set through the API) and what the checks
/// concluded, so that a server in maintenance stays there and a down
/// server gets no traffic until its checks pass again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Carried {
    pub pool: String,
    pub name: String,
    pub addr: SocketAddr,
    /// `normal`, `draining` or `maintenance`.
    pub admin: String,
    /// A weight set through the admin API; 0: none.
    pub weight_override: u32,
    /// One bit per active check that says down.
    pub down_checks: u32,
}

impl AdminState {
    pub fn parse(s: &str) -> Option<AdminState> {
        match s {
            "normal" => Some(AdminState::Normal),
            "draining" => Some(AdminState::Draining),
            "maintenance" => Some(AdminState::Maintenance),
            _ => None,
        }
    }
}

/// Per-server counters, recorded by the proxy and the checks.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Responses by status class (index 1..=5); index 0 counts attempts that
    /// got no response (connect error, timeout, reset).
    pub responses: [AtomicU64; 6],
    pub response_time: Histogram,
    pub state_changes: AtomicU64,
    pub checks_ok: AtomicU64,
    pub checks_failed: AtomicU64,
    /// 0: never checked, 1: last check passed, 2: last check failed.
    pub last_check: AtomicU8,
    pub last_check_latency_us: AtomicU64,
    /// Consecutive failed checks (any check of the server).
    pub consecutive_failures: AtomicU32,
    /// Requests sent again to another server after this one failed them.
    pub retries: AtomicU64,
    /// WebSocket tunnels open now to this server.
    pub tunnels: AtomicU64,
}

impl ServerStats {
    pub fn record_response(&self, status: u16, elapsed_us: u64) {
        let class = usize::from(status / 100).clamp(1, 5);
        self.responses[class].fetch_add(1, Ordering::Relaxed);
        self.response_time.record_us(elapsed_us);
    }
    pub fn record_error(&self) {
        self.responses[0].fetch_add(1, Ordering::Relaxed);
    }
    /// One active check's result and how long it took.
    pub fn record_check(&self, ok: bool, latency_us: u64) {
        self.last_check_latency_us.store(latency_us, Ordering::Relaxed);
        let (count, last) = if ok { (&self.checks_ok, 1) } else { (&self.checks_failed, 2) };
        count.fetch_add(1, Ordering::Relaxed);
        self.last_check.store(last, Ordering::Relaxed);
        if ok {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        } else {
            self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
    pub fn total_responses(&self) -> u64 {
        self.responses.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

#[derive(Debug)]
pub struct ServerState {
    pub pool: String,
    pub name: String,
    pub addr: SocketAddr,
    config_weight: AtomicU32,
    /// Weight set through the admin API; 0 means none.
    weight_override: AtomicU32,
    /// The weight balancing uses now (shared with the balancer's `Peer`).
    pub effective_weight: Arc<AtomicU32>,
    pub in_flight: Arc<AtomicU32>,
    admin: AtomicU8,
    /// One bit per active check that currently says "down".
    down_checks: AtomicU32,
    /// Unix milliseconds of the last health or admin transition.
    pub changed_at_unix_ms: AtomicU64,
    /// `clock::now_ms()` when the server last came up (slow start).
    recovered_at_ms: AtomicU64,
    slow_start_ms: AtomicU64,
    /// Failures the proxy saw (max_fails / fail_timeout).
    pub passive: super::PassiveHealth,
    /// What the server's open WebSocket tunnels must hear of: it went into
    /// maintenance (they close), active checks marked it down (they close,
    /// spread over `limits.tunnel_close_spread`, where the pool says
    /// `close_tunnels_on_down`), or it stopped being the active server of
    /// its `primary` pool (they close like a down server's, so that agents
    /// reconnect to the new active server, where the API now goes). Each
    /// event is counted, then [`TUNNEL_BELL`] rings: a tunnel keeps the
    /// counts it saw at its start and one waiter on the bell, nothing more.
    pub tunnel_events: TunnelEvents,
    /// Woken when a peer reports the server down: its checks probe at once
    /// and then quickly until they agree or it answers.
    pub probe_now: tokio::sync::Notify,
    /// Counts peers' "down" reports, so a check that was busy probing when
    /// [`ServerState::probe_now`] fired still sees the report.
    pub peer_down_reports: AtomicU64,
    /// `primary` pools: this is the active server the node (or the cluster)
    /// agreed on. Set by `control`.
    pub active_primary: std::sync::atomic::AtomicBool,
    /// Connections to the server that the cluster's other nodes have open
    /// (summed from their load reports); `least_loaded` adds them.
    pub remote_connections: AtomicU32,
    pub stats: ServerStats,
}

/// Rung when something happened that open WebSocket tunnels must look
/// at: an event of their server ([`ServerState::tunnel_events`]) or an
/// order of their node (shutdown, shedding: `proxy`'s tunnel `Orders`).
/// One bell for the process, so that a tunnel waits on one thing only; a
/// tunnel woken by another server's event looks at its own counts, finds
/// nothing new, and waits again (events are rare: a few atomic loads per
/// tunnel each time).
pub static TUNNEL_BELL: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Counts of the events that close a server's tunnels
/// ([`ServerState::tunnel_events`]).
#[derive(Debug, Default)]
pub struct TunnelEvents {
    /// Put into maintenance.
    pub kicks: AtomicU32,
    /// Marked down by active checks.
    pub downs: AtomicU32,
    /// No longer the active server of its `primary` pool.
    pub demotions: AtomicU32,
}

/// A change of health seen by [`ServerState::set_check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    WentDown,
    CameUp,
}

/// `recovered_at_ms` before the first recovery.
const NEVER: u64 = u64::MAX;

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl ServerState {
    pub fn new(pool: &str, name: &str, addr: SocketAddr, weight: u32) -> Self {
        ServerState {
            pool: pool.to_string(),
            name: name.to_string(),
            addr,
            config_weight: AtomicU32::new(weight.max(1)),
            weight_override: AtomicU32::new(0),
            effective_weight: Arc::new(AtomicU32::new(weight.max(1))),
            in_flight: Arc::new(AtomicU32::new(0)),
            admin: AtomicU8::new(0),
            down_checks: AtomicU32::new(0),
            changed_at_unix_ms: AtomicU64::new(unix_ms()),
            recovered_at_ms: AtomicU64::new(NEVER),
            slow_start_ms: AtomicU64::new(0),
            passive: super::PassiveHealth::new(1, std::time::Duration::from_secs(10)),
            tunnel_events: TunnelEvents::default(),
            probe_now: tokio::sync::Notify::new(),
            peer_down_reports: AtomicU64::new(0),
            active_primary: std::sync::atomic::AtomicBool::new(false),
            remote_connections: AtomicU32::new(0),
            stats: ServerStats::default(),
        }
    }

    /// Counts a tunnel event (one of `tunnel_events`) and tells the tunnels.
    fn tunnel_event(&self, counter: &AtomicU32) {
        counter.fetch_add(1, Ordering::Release);
        TUNNEL_BELL.notify_waiters();
    }

    /// The server stopped being the active server of its `primary` pool:
    /// its tunnels close (see `tunnel_events`).
    pub fn demote(&self) {
        self.tunnel_event(&self.tunnel_events.demotions);
    }

    /// A peer reports the server down: its checks probe at once.
    pub fn report_peer_down(&self) {
        self.peer_down_reports.fetch_add(1, Ordering::Relaxed);
        self.probe_now.notify_waiters();
    }

    /// Applies the settings of a (re)loaded config. A reload resets a weight
    /// set through the API to the configured one; admin states stay.
    pub fn configure(&self, weight: u32, slow_start_ms: u64, checks: usize) {
        self.config_weight.store(weight.max(1), Ordering::Relaxed);
        self.weight_override.store(0, Ordering::Relaxed);
        self.slow_start_ms.store(slow_start_ms, Ordering::Relaxed);
        // Checks that no longer exist cannot keep the server down.
        let mask = if checks >= 32 { u32::MAX } else { (1u32 << checks) - 1 };
        self.down_checks.fetch_and(mask, Ordering::Relaxed);
        self.refresh_weight(crate::clock::now_ms());
    }

    /// Whether check `idx` currently says down.
    pub fn check_is_down(&self, idx: usize) -> bool {
        self.down_checks.load(Ordering::Relaxed) & (1u32 << idx.min(31)) != 0
    }

    pub fn is_up(&self) -> bool {
        self.down_checks.load(Ordering::Relaxed) == 0
    }

    pub fn admin_state(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Relaxed))
    }

    pub fn set_admin_state(&self, s: AdminState) -> AdminState {
        let old = AdminState::from_u8(self.admin.swap(s.to_u8(), Ordering::Relaxed));
        if old != s {
            self.changed_at_unix_ms.store(unix_ms(), Ordering::Relaxed);
            if s == AdminState::Maintenance {
                // No traffic at all: open WebSocket tunnels close too.
                self.tunnel_event(&self.tunnel_events.kicks);
            }
            if old == AdminState::Maintenance {
                // Back from maintenance: ramp up like a recovered server.
                let now = crate::clock::now_ms();
                self.recovered_at_ms.store(now, Ordering::Relaxed);
                self.refresh_weight(now);
            }
        }
        old
    }

    /// Records what check `idx` concluded; returns the server's transition,
    /// if this changed whether it is up.
    pub fn set_check(&self, idx: usize, up: bool) -> Option<Transition> {
        let bit = 1u32 << idx.min(31);
        let before = if up {
            self.down_checks.fetch_and(!bit, Ordering::AcqRel)
        } else {
            self.down_checks.fetch_or(bit, Ordering::AcqRel)
        };
        let after = if up { before & !bit } else { before | bit };
        let t = match (before == 0, after == 0) {
            (true, false) => {
                self.tunnel_event(&self.tunnel_events.downs);
                Transition::WentDown
            }
            (false, true) => {
                let now = crate::clock::now_ms();
                self.recovered_at_ms.store(now, Ordering::Relaxed);
                self.refresh_weight(now);
                Transition::CameUp
            }
            _ => return None,
        };
        self.changed_at_unix_ms.store(unix_ms(), Ordering::Relaxed);
        self.stats.state_changes.fetch_add(1, Ordering::Relaxed);
        Some(t)
    }

    /// This server's state for the new process of an in-place upgrade.
    pub fn carry(&self) -> Carried {
        Carried {
            pool: self.pool.clone(),
            name: self.name.clone(),
            addr: self.addr,
            admin: self.admin_state().as_str().to_string(),
            weight_override: self.weight_override.load(Ordering::Relaxed),
            down_checks: self.down_checks.load(Ordering::Relaxed),
        }
    }

    /// Takes over `c`, the old process's state of this server (same pool,
    /// name and address; the caller checks), for the `checks` active checks
    /// the server has now. Returns what changed, for the log.
    pub fn take_over(&self, c: &Carried, checks: usize) -> Vec<String> {
        let mut changed = Vec::new();
        if let Some(admin) = AdminState::parse(&c.admin).filter(|a| *a != AdminState::Normal) {
            self.set_admin_state(admin);
            changed.push(admin.as_str().to_string());
        }
        if c.weight_override != 0 {
            self.set_weight_override(c.weight_override);
            changed.push(format!("weight {}", c.weight_override));
        }
        for idx in (0..checks.min(32)).filter(|i| c.down_checks & (1 << i) != 0) {
            if self.set_check(idx, false) == Some(Transition::WentDown) {
                changed.push("down".to_string());
            }
        }
        changed
    }

    pub fn config_weight(&self) -> u32 {
        self.config_weight.load(Ordering::Relaxed)
    }

    /// The weight before slow start: the API's override or the config's.
    pub fn base_weight(&self) -> u32 {
        match self.weight_override.load(Ordering::Relaxed) {
            0 => self.config_weight(),
            w => w,
        }
    }

    pub fn set_weight_override(&self, w: u32) {
        self.weight_override.store(w, Ordering::Relaxed);
        self.refresh_weight(crate::clock::now_ms());
    }

    /// Recomputes the effective weight (slow-start ramp); returns whether the
    /// server is still ramping.
    pub fn refresh_weight(&self, now_ms: u64) -> bool {
        let base = self.base_weight();
        let ramp = self.slow_start_ms.load(Ordering::Relaxed);
        let since = self.recovered_at_ms.load(Ordering::Relaxed);
        let elapsed = now_ms.saturating_sub(since);
        let (w, ramping) = if ramp > 0 && since != NEVER && elapsed < ramp {
            (((u64::from(base) * elapsed) / ramp).max(1) as u32, true)
        } else {
            (base, false)
        };
        self.effective_weight.store(w, Ordering::Relaxed);
        ramping
    }

    pub fn effective_weight(&self) -> u32 {
        self.effective_weight.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerState {
        ServerState::new("p", "s", "127.0.0.1:1".parse().unwrap(), 10)
    }

    #[test]
    fn all_checks_must_pass_for_up() {
        let s = server();
        assert!(s.is_up());
        assert_eq!(s.set_check(0, false), Some(Transition::WentDown));
        assert_eq!(s.set_check(1, false), None);
        assert_eq!(s.set_check(0, true), None, "check 1 still fails");
        assert!(!s.is_up());
        assert_eq!(s.set_check(1, true), Some(Transition::CameUp));
        assert!(s.is_up());
        assert_eq!(s.stats.state_changes.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn slow_start_ramps_the_weight() {
        let s = server();
        s.configure(10, 10_000, 1);
        s.set_check(0, false);
        s.set_check(0, true);
        let t0 = s.recovered_at_ms.load(Ordering::Relaxed);
        assert!(s.refresh_weight(t0 + 1_000));
        assert_eq!(s.effective_weight(), 1);
        assert!(s.refresh_weight(t0 + 5_000));
        assert_eq!(s.effective_weight(), 5);
        assert!(!s.refresh_weight(t0 + 10_000));
        assert_eq!(s.effective_weight(), 10);
    }

    #[test]
    fn weight_override_and_reload() {
        let s = server();
        s.set_weight_override(3);
        assert_eq!(s.effective_weight(), 3);
        s.configure(7, 0, 0);
        assert_eq!(s.effective_weight(), 7, "reload resets the API's weight");
        s.set_admin_state(AdminState::Draining);
        s.configure(7, 0, 0);
        assert_eq!(s.admin_state(), AdminState::Draining, "admin state survives a reload");
    }
}
