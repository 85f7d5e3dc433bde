//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4),
//! written by hand from the counters; each family's name, type, help text
//! (and the label of one-label families) come from
//! [`super::metric_families`].

use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::metric_families::{self as f, Family};
use crate::metrics::{self as m, Histogram, BUCKETS_US, COUNTERS};
use crate::state::{Pool, Server, Snapshot};

/// CPU time at the previous scrape, for `sysmanage_cpu_usage_percent`.
pub struct CpuMeter {
    last: Mutex<Option<(Instant, f64)>>,
}

impl Default for CpuMeter {
    fn default() -> Self {
        CpuMeter { last: Mutex::new(None) }
    }
}

/// utime + stime of this process in seconds.
fn process_cpu_seconds() -> Option<f64> {
    cpu_seconds("self")
}

/// utime + stime of process `pid` (a number, or `self`) in seconds, from
/// `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0) // USER_HZ is 100 on Linux
}

pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl CpuMeter {
    /// CPU use in percent of one core since the previous call (or since the
    /// process started, on the first call).
    pub fn percent(&self, uptime_secs: f64) -> f64 {
        let Some(cpu) = process_cpu_seconds() else { return 0.0 };
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let pct = match *last {
            Some((at, before)) => {
                let wall = now.duration_since(at).as_secs_f64();
                if wall > 0.0 {
                    (cpu - before) / wall * 100.0
                } else {
                    0.0
                }
            }
            None if uptime_secs > 0.0 => cpu / uptime_secs * 100.0,
            None => 0.0,
        };
        *last = Some((now, cpu));
        pct.max(0.0)
    }
}

/// The two comment lines that open a family: what it counts and its type.
fn header(out: &mut String, family: &Family) {
    let Family { name, kind, help, .. } = family;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
}

/// A family of one sample without labels: `name value`.
fn single(out: &mut String, family: &Family, value: impl Display) {
    header(out, family);
    let _ = writeln!(out, "{} {value}", family.name);
}

/// A family whose samples are told apart by its one label:
/// `name{label="key"} value` for each (key, value).
fn labeled<K: Display, V: Display>(out: &mut String, family: &Family, samples: impl IntoIterator<Item = (K, V)>) {
    debug_assert_eq!(family.labels.len(), 1, "{}", family.name);
    header(out, family);
    let (name, label) = (family.name, family.labels[0].name);
    for (key, value) in samples {
        let _ = writeln!(out, "{name}{{{label}=\"{key}\"}} {value}");
    }
}

/// A counter's value now.
fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Escapes a label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A histogram's samples: the cumulative buckets (in seconds), the sum and
/// the count; `labels` (if any) go before `le`.
fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let (counts, sum_us) = h.read();
    let mut cumulative = 0u64;
    let sep = if labels.is_empty() { "" } else { "," };
    for (i, c) in counts.iter().enumerate() {
        cumulative += c;
        let le = match BUCKETS_US.get(i) {
            Some(b) => format!("{}", *b as f64 / 1e6),
            None => "+Inf".to_string(),
        };
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
    }
    let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
    let _ = writeln!(out, "{name}_sum{braces} {}", sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{braces} {cumulative}");
}

/// The whole page but the cluster families ([`render_cluster`]), in this
/// order: the node's traffic, its features, the busy poller, the sticky
/// sessions, then each server.
pub fn render(
    snap: &Snapshot,
    proxy: &crate::proxy::ProxyState,
    sessions: Option<&crate::sessions::Sessions>,
    cpu_percent: f64,
) -> String {
    let mut out = String::with_capacity(8 * 1024);
    render_traffic(&mut out, proxy, cpu_percent);
    render_features(&mut out, proxy);
    render_busy_poll(&mut out, &crate::busy_poll::POLLER);
    render_sessions(&mut out, snap, sessions);
    render_servers(&mut out, snap);
    out
}

/// Client connections and tunnels, requests (duration, per route, retries,
/// malformed ones and malformed answers), this process's CPU and memory,
/// and the health checks' results.
fn render_traffic(out: &mut String, proxy: &crate::proxy::ProxyState, cpu_percent: f64) {
    single(out, &f::ACTIVE_CONNECTIONS, load(&COUNTERS.active_connections));
    single(out, &f::WEBSOCKET_TUNNELS, load(&COUNTERS.websocket_tunnels));
    single(out, &f::TUNNEL_BUFFERED_BYTES, load(&COUNTERS.tunnel_buffered_bytes));
    header(out, &f::REQUEST_DURATION);
    histogram(out, m::REQUEST_DURATION, "", &COUNTERS.request_duration);
    header(out, &f::REQUESTS_TOTAL);
    for (route, method, count) in proxy.route_stats.read() {
        let _ = writeln!(out, "{}{{method=\"{method}\",endpoint=\"{}\"}} {count}", m::REQUESTS_TOTAL, esc(&route));
    }
    single(out, &f::CPU_USAGE, format!("{cpu_percent:.2}"));
    single(out, &f::MEMORY_USAGE, resident_memory_bytes().unwrap_or(0));
    single(out, &f::RETRIES_TOTAL, load(&COUNTERS.retries));
    let malformed = m::MALFORMED_REQUEST_REASONS.iter().zip(COUNTERS.malformed.iter().map(load));
    labeled(out, &f::MALFORMED_TOTAL, malformed);
    let malformed = m::MALFORMED_RESPONSE_REASONS.iter().zip(COUNTERS.malformed_responses.iter().map(load));
    labeled(out, &f::MALFORMED_RESPONSES, malformed);
    let checks = [("success", load(&COUNTERS.checks_ok)), ("failure", load(&COUNTERS.checks_failed))];
    labeled(out, &f::HEALTH_CHECKS, checks);
    labeled(out, &f::ACCEPT_ERRORS, m::ACCEPT_ERROR_REASONS.iter().zip(COUNTERS.accept_errors.iter().map(load)));
    let timeouts = m::CLIENT_TIMEOUT_KINDS.iter().zip(COUNTERS.client_timeouts.iter().map(load));
    labeled(out, &f::CLIENT_TIMEOUTS, timeouts);
}

/// TLS handshakes, requests refused by rate limits, bytes through tunnels
/// and sticky-session lookups.
fn render_features(out: &mut String, proxy: &crate::proxy::ProxyState) {
    header(out, &f::TLS_HANDSHAKE);
    histogram(out, m::TLS_HANDSHAKE, "", &COUNTERS.tls_handshake);
    single(out, &f::TLS_HANDSHAKE_FAILURES, load(&COUNTERS.tls_handshake_failures));
    let zones = proxy.zones.iter().flatten().map(|z| (esc(&z.config.name), z.zone.stats().rejected));
    labeled(out, &f::RATELIMITED, zones);
    let bytes = [("up", load(&COUNTERS.tunnel_bytes_up)), ("down", load(&COUNTERS.tunnel_bytes_down))];
    labeled(out, &f::TUNNEL_BYTES, bytes);
    labeled(out, &f::TUNNELS_ENDED, m::TUNNEL_END_REASONS.iter().zip(COUNTERS.tunnels_ended.iter().map(load)));
    let lookups = [
        ("hit", load(&COUNTERS.affinity_hits)),
        ("miss", load(&COUNTERS.affinity_misses)),
        ("reassigned", load(&COUNTERS.affinity_reassigned)),
    ];
    labeled(out, &f::AFFINITY, lookups);
}

/// `pool="...",server="..."`: the labels of a server's samples.
fn server_labels(p: &Pool, s: &Server) -> String {
    format!("pool=\"{}\",server=\"{}\"", esc(&p.cfg.name), esc(&s.name))
}

/// Live sticky sessions per server of each pool with affinity, and the
/// session store's waiting records and failed writes (the families are
/// empty without a session table).
fn render_sessions(out: &mut String, snap: &Snapshot, sessions: Option<&crate::sessions::Sessions>) {
    header(out, &f::SESSIONS);
    if let Some(sessions) = sessions {
        for p in snap.pools.iter().filter(|p| p.cfg.affinity.is_some()) {
            let counts = sessions.table.counts_per_server(&p.cfg.name);
            for s in &p.servers {
                let n = counts.get(&s.name).copied().unwrap_or(0);
                let _ = writeln!(out, "{}{{{}}} {n}", m::SESSIONS, server_labels(p, s));
            }
        }
    }
    let store = sessions.map(|s| s.store.stats());
    header(out, &f::STORE_PENDING);
    if let Some(st) = store {
        let _ = writeln!(out, "{} {}", m::STORE_PENDING, st.pending);
    }
    header(out, &f::STORE_WRITE_ERRORS);
    if let Some(st) = store {
        let _ = writeln!(out, "{} {}", m::STORE_WRITE_ERRORS, st.commit_errors);
    }
}

/// A family with one sample per server of every pool: `value` of the pool
/// and the server's index in it.
fn per_server<V: Display>(out: &mut String, family: &Family, snap: &Snapshot, value: impl Fn(&Pool, usize) -> V) {
    header(out, family);
    for p in &snap.pools {
        for (i, s) in p.servers.iter().enumerate() {
            let _ = writeln!(out, "{}{{{}}} {}", family.name, server_labels(p, s), value(p, i));
        }
    }
}

/// Each server of every pool: up or not, requests in flight, attempts by
/// response class, response time and health transitions.
fn render_servers(out: &mut String, snap: &Snapshot) {
    let now = crate::clock::now_ms();
    per_server(out, &f::BACKEND_UP, snap, |p, i| u8::from(p.available(i, now)));
    per_server(out, &f::BACKEND_ACTIVE, snap, |p, i| p.servers[i].state.in_flight.load(Ordering::Relaxed));
    header(out, &f::BACKEND_REQUESTS);
    for p in &snap.pools {
        for s in &p.servers {
            for (i, c) in s.state.stats.responses.iter().enumerate() {
                let code = if i == 0 { "error".to_string() } else { format!("{i}xx") };
                let _ = writeln!(out, "{}{{{},code=\"{code}\"}} {}", m::BACKEND_REQUESTS, server_labels(p, s), load(c));
            }
        }
    }
    header(out, &f::BACKEND_RESPONSE);
    for p in &snap.pools {
        for s in &p.servers {
            histogram(out, m::BACKEND_RESPONSE, &server_labels(p, s), &s.state.stats.response_time);
        }
    }
    per_server(out, &f::STATE_CHANGES, snap, |p, i| p.servers[i].state.stats.state_changes.load(Ordering::Relaxed));
}

/// The busy poller's counters (`node.busy_poll`): turns (zero-timeout polls),
/// sleeps (a window without requests) and coalescing waits. All zero when
/// busy polling is off. They tell an operator why an idle-looking node
/// shows a busy core: it was polling.
pub fn render_busy_poll(out: &mut String, poller: &crate::busy_poll::Poller) {
    let (turns, sleeps) = poller.stats();
    labeled(out, &f::BUSY_POLL, [("turn", turns), ("sleep", sleeps), ("wait", poller.waits())]);
}

/// The cluster families. A standalone node (`None`) is a cluster of one:
/// one live member, no gossip.
pub fn render_cluster(out: &mut String, cluster: Option<(&crate::api::ClusterStatus, crate::cluster::TransportStats)>) {
    let (c, t) = match cluster {
        Some((c, t)) => (Some(c), t),
        None => (None, crate::cluster::TransportStats::default()),
    };
    let members = ["live", "joining", "leaving", "left", "dead"].map(|state| match c {
        Some(c) => (state, c.members.iter().filter(|m| m.state == state).count()),
        None => (state, usize::from(state == "live")),
    });
    labeled(out, &f::CLUSTER_NODES, members);
    single(out, &f::CLUSTER_SYNCING, u8::from(c.is_some_and(|c| c.syncing)));
    single(out, &f::CLUSTER_STATE_BYTES, c.map_or(0, |c| c.state_bytes));
    labeled(out, &f::CLUSTER_DATAGRAMS, [("sent", t.datagrams_sent), ("received", t.datagrams_received)]);
    labeled(out, &f::CLUSTER_BYTES, [("sent", t.bytes_sent), ("received", t.bytes_received)]);
    render_cluster_dropped(out, &t);
    let sessions =
        [("merged", load(&COUNTERS.sessions_merged)), ("not_gossiped", load(&COUNTERS.sessions_not_gossiped))];
    labeled(out, &f::CLUSTER_SESSIONS, sessions);
}

/// Gossip datagrams dropped on receipt, one sample per reason.
fn render_cluster_dropped(out: &mut String, t: &crate::cluster::TransportStats) {
    labeled(
        out,
        &f::CLUSTER_DROPPED,
        [
            ("too_short", t.too_short),
            ("too_long", t.too_long),
            ("bad_version", t.bad_version),
            ("unknown_key", t.unknown_key),
            ("auth_failed", t.auth_failed),
            ("malformed", t.malformed),
            ("stale", t.stale),
            ("future", t.future),
            ("replayed", t.replayed),
            ("invalid_payload", t.invalid_payload),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::busy_poll::Poller;
    use std::time::Duration;

    /// The busy-poll family shows the poller's own counts: here a poller
    /// that turned with waits (no requests, so every turn is light) until
    /// it slept.
    #[tokio::test(flavor = "current_thread")]
    async fn busy_poll_family_shows_the_pollers_counts() {
        static P: Poller = Poller::new();
        let mut idle = String::new();
        render_busy_poll(&mut idle, &P);
        assert!(idle.contains("# TYPE sysmanage_busy_poll_total counter"), "{idle}");
        assert!(idle.contains("sysmanage_busy_poll_total{event=\"turn\"} 0\n"), "{idle}");

        let poller = tokio::spawn(P.poll(Duration::from_millis(5), Duration::from_micros(100), || 0));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !P.is_idle() {
            assert!(std::time::Instant::now() < deadline, "the poller never slept");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        poller.abort();
        let (turns, sleeps) = P.stats();
        assert!(turns > 0 && sleeps == 1 && P.waits() > 0, "turns {turns}, sleeps {sleeps}, waits {}", P.waits());
        let mut out = String::new();
        render_busy_poll(&mut out, &P);
        for (event, n) in [("turn", turns), ("sleep", sleeps), ("wait", P.waits())] {
            assert!(out.contains(&format!("sysmanage_busy_poll_total{{event=\"{event}\"}} {n}\n")), "{out}");
        }
    }
}
