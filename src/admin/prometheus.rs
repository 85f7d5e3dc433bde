//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4),
//! written by hand from the counters; names come from [`crate::metrics`].

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Instant;

use crate::metrics::{self as m, Histogram, BUCKETS_US, COUNTERS};
use crate::state::Snapshot;

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

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

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

pub fn render(
    snap: &Snapshot,
    proxy: &crate::proxy::ProxyState,
    sessions: Option<&crate::sessions::Sessions>,
    cpu_percent: f64,
) -> String {
    let routes = &proxy.route_stats;
    let mut out = String::with_capacity(8 * 1024);
    header(&mut out, m::ACTIVE_CONNECTIONS, "gauge", "Client connections open now.");
    let _ = writeln!(out, "{} {}", m::ACTIVE_CONNECTIONS, COUNTERS.active_connections.load(Ordering::Relaxed));
    header(&mut out, m::WEBSOCKET_TUNNELS, "gauge", "WebSocket tunnels open now.");
    let _ = writeln!(out, "{} {}", m::WEBSOCKET_TUNNELS, COUNTERS.websocket_tunnels.load(Ordering::Relaxed));
    header(&mut out, m::REQUEST_DURATION, "histogram", "Time from request head to response head.");
    histogram(&mut out, m::REQUEST_DURATION, "", &COUNTERS.request_duration);
    header(&mut out, m::REQUESTS_TOTAL, "counter", "Requests by method and endpoint (route name).");
    for (route, method, count) in routes.read() {
        let _ = writeln!(out, "{}{{method=\"{method}\",endpoint=\"{}\"}} {count}", m::REQUESTS_TOTAL, esc(&route));
    }
    header(
        &mut out,
        m::CPU_USAGE,
        "gauge",
        "CPU use of this process in percent of one core since the previous scrape.",
    );
    let _ = writeln!(out, "{} {:.2}", m::CPU_USAGE, cpu_percent);
    header(&mut out, m::MEMORY_USAGE, "gauge", "Resident memory of this process in bytes.");
    let _ = writeln!(out, "{} {}", m::MEMORY_USAGE, resident_memory_bytes().unwrap_or(0));
    header(&mut out, m::RETRIES_TOTAL, "counter", "Requests sent again to another server.");
    let _ = writeln!(out, "{} {}", m::RETRIES_TOTAL, COUNTERS.retries.load(Ordering::Relaxed));
    header(&mut out, m::MALFORMED_TOTAL, "counter", "Requests refused as malformed (400, 431), by reason.");
    for (reason, n) in m::MALFORMED_REQUEST_REASONS.iter().zip(&COUNTERS.malformed) {
        let _ = writeln!(out, "{}{{reason=\"{reason}\"}} {}", m::MALFORMED_TOTAL, n.load(Ordering::Relaxed));
    }
    header(
        &mut out,
        m::MALFORMED_RESPONSES,
        "counter",
        "Servers' answers refused (502) or whose connection was not reused, by reason.",
    );
    for (reason, n) in m::MALFORMED_RESPONSE_REASONS.iter().zip(&COUNTERS.malformed_responses) {
        let _ = writeln!(out, "{}{{reason=\"{reason}\"}} {}", m::MALFORMED_RESPONSES, n.load(Ordering::Relaxed));
    }
    header(&mut out, m::HEALTH_CHECKS, "counter", "Active health checks by result.");
    let _ = writeln!(out, "{}{{result=\"success\"}} {}", m::HEALTH_CHECKS, COUNTERS.checks_ok.load(Ordering::Relaxed));
    let _ =
        writeln!(out, "{}{{result=\"failure\"}} {}", m::HEALTH_CHECKS, COUNTERS.checks_failed.load(Ordering::Relaxed));

    header(&mut out, m::TLS_HANDSHAKE, "histogram", "Time to complete a TLS handshake with a client.");
    histogram(&mut out, m::TLS_HANDSHAKE, "", &COUNTERS.tls_handshake);
    header(&mut out, m::TLS_HANDSHAKE_FAILURES, "counter", "TLS handshakes that failed or timed out.");
    let _ = writeln!(out, "{} {}", m::TLS_HANDSHAKE_FAILURES, COUNTERS.tls_handshake_failures.load(Ordering::Relaxed));
    header(&mut out, m::RATELIMITED, "counter", "Requests refused by a rate-limit zone.");
    for z in proxy.zones.iter().flatten() {
        let _ = writeln!(out, "{}{{zone=\"{}\"}} {}", m::RATELIMITED, esc(&z.config.name), z.zone.stats().rejected);
    }
    header(&mut out, m::TUNNEL_BYTES, "counter", "Bytes through WebSocket tunnels, by direction.");
    let _ =
        writeln!(out, "{}{{direction=\"up\"}} {}", m::TUNNEL_BYTES, COUNTERS.tunnel_bytes_up.load(Ordering::Relaxed));
    let _ = writeln!(
        out,
        "{}{{direction=\"down\"}} {}",
        m::TUNNEL_BYTES,
        COUNTERS.tunnel_bytes_down.load(Ordering::Relaxed)
    );
    header(&mut out, m::AFFINITY, "counter", "Sticky-session lookups: hit, miss (new key) or reassigned.");
    for (result, c) in [
        ("hit", &COUNTERS.affinity_hits),
        ("miss", &COUNTERS.affinity_misses),
        ("reassigned", &COUNTERS.affinity_reassigned),
    ] {
        let _ = writeln!(out, "{}{{result=\"{result}\"}} {}", m::AFFINITY, c.load(Ordering::Relaxed));
    }
    render_busy_poll(&mut out, &crate::busy_poll::POLLER);
    header(&mut out, m::SESSIONS, "gauge", "Live sticky sessions per server.");
    if let Some(sessions) = sessions {
        for p in snap.pools.iter().filter(|p| p.cfg.affinity.is_some()) {
            let counts = sessions.table.counts_per_server(&p.cfg.name);
            for s in &p.servers {
                let n = counts.get(&s.name).copied().unwrap_or(0);
                let _ =
                    writeln!(out, "{}{{pool=\"{}\",server=\"{}\"}} {n}", m::SESSIONS, esc(&p.cfg.name), esc(&s.name));
            }
        }
    }

    let now = crate::clock::now_ms();
    header(&mut out, m::BACKEND_UP, "gauge", "1 if the server can take new requests, else 0.");
    for p in &snap.pools {
        for (i, s) in p.servers.iter().enumerate() {
            let up = u8::from(p.available(i, now));
            let _ =
                writeln!(out, "{}{{pool=\"{}\",server=\"{}\"}} {up}", m::BACKEND_UP, esc(&p.cfg.name), esc(&s.name));
        }
    }
    header(&mut out, m::BACKEND_ACTIVE, "gauge", "Requests in flight to the server.");
    for p in &snap.pools {
        for s in &p.servers {
            let n = s.state.in_flight.load(Ordering::Relaxed);
            let _ =
                writeln!(out, "{}{{pool=\"{}\",server=\"{}\"}} {n}", m::BACKEND_ACTIVE, esc(&p.cfg.name), esc(&s.name));
        }
    }
    header(
        &mut out,
        m::BACKEND_REQUESTS,
        "counter",
        "Attempts sent to the server by response class (error: no response).",
    );
    for p in &snap.pools {
        for s in &p.servers {
            for (i, c) in s.state.stats.responses.iter().enumerate() {
                let code = if i == 0 { "error".to_string() } else { format!("{i}xx") };
                let _ = writeln!(
                    out,
                    "{}{{pool=\"{}\",server=\"{}\",code=\"{code}\"}} {}",
                    m::BACKEND_REQUESTS,
                    esc(&p.cfg.name),
                    esc(&s.name),
                    c.load(Ordering::Relaxed)
                );
            }
        }
    }
    header(&mut out, m::BACKEND_RESPONSE, "histogram", "Time from sending a request to the server's response head.");
    for p in &snap.pools {
        for s in &p.servers {
            let labels = format!("pool=\"{}\",server=\"{}\"", esc(&p.cfg.name), esc(&s.name));
            histogram(&mut out, m::BACKEND_RESPONSE, &labels, &s.state.stats.response_time);
        }
    }
    header(&mut out, m::STATE_CHANGES, "counter", "Health transitions of the server.");
    for p in &snap.pools {
        for s in &p.servers {
            let n = s.state.stats.state_changes.load(Ordering::Relaxed);
            let _ =
                writeln!(out, "{}{{pool=\"{}\",server=\"{}\"}} {n}", m::STATE_CHANGES, esc(&p.cfg.name), esc(&s.name));
        }
    }
    out
}

/// The busy poller's counters (`node.busy_poll`): turns (zero-timeout polls),
/// sleeps (a window without requests) and coalescing waits. All zero when
/// busy polling is off. They tell an operator why an idle-looking node
/// shows a busy core: it was polling.
pub fn render_busy_poll(out: &mut String, poller: &crate::busy_poll::Poller) {
    header(out, m::BUSY_POLL, "counter", "Busy-poller events: turn (a zero-timeout poll), sleep, wait (coalescing).");
    let (turns, sleeps) = poller.stats();
    for (event, n) in [("turn", turns), ("sleep", sleeps), ("wait", poller.waits())] {
        let _ = writeln!(out, "{}{{event=\"{event}\"}} {n}", m::BUSY_POLL);
    }
}

/// The cluster families. A standalone node (`None`) is a cluster of one:
/// one live member, no gossip.
pub fn render_cluster(out: &mut String, cluster: Option<(&crate::api::ClusterStatus, crate::cluster::TransportStats)>) {
    let (c, t) = match cluster {
        Some((c, t)) => (Some(c), t),
        None => (None, crate::cluster::TransportStats::default()),
    };
    header(out, m::CLUSTER_NODES, "gauge", "Cluster members by state, this node included.");
    for state in ["live", "joining", "leaving", "left", "dead"] {
        let n = match c {
            Some(c) => c.members.iter().filter(|m| m.state == state).count(),
            None => usize::from(state == "live"),
        };
        let _ = writeln!(out, "{}{{state=\"{state}\"}} {n}", m::CLUSTER_NODES);
    }
    header(out, m::CLUSTER_SYNCING, "gauge", "1 while the session table is being fetched from a peer.");
    let _ = writeln!(out, "{} {}", m::CLUSTER_SYNCING, u8::from(c.is_some_and(|c| c.syncing)));
    header(out, m::CLUSTER_STATE_BYTES, "gauge", "Size of this node's gossip state (keys, values, versions).");
    let _ = writeln!(out, "{} {}", m::CLUSTER_STATE_BYTES, c.map_or(0, |c| c.state_bytes));
    header(out, m::CLUSTER_DATAGRAMS, "counter", "Gossip datagrams sent and received.");
    let _ = writeln!(out, "{}{{direction=\"sent\"}} {}", m::CLUSTER_DATAGRAMS, t.datagrams_sent);
    let _ = writeln!(out, "{}{{direction=\"received\"}} {}", m::CLUSTER_DATAGRAMS, t.datagrams_received);
    header(out, m::CLUSTER_BYTES, "counter", "Gossip bytes (sealed) sent and received.");
    let _ = writeln!(out, "{}{{direction=\"sent\"}} {}", m::CLUSTER_BYTES, t.bytes_sent);
    let _ = writeln!(out, "{}{{direction=\"received\"}} {}", m::CLUSTER_BYTES, t.bytes_received);
    header(out, m::CLUSTER_DROPPED, "counter", "Gossip datagrams dropped on receipt, by reason.");
    for (reason, n) in [
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
    ] {
        let _ = writeln!(out, "{}{{reason=\"{reason}\"}} {n}", m::CLUSTER_DROPPED);
    }
    header(
        out,
        m::CLUSTER_SESSIONS,
        "counter",
        "Session records from peers that were applied, and records not gossiped (queue full).",
    );
    let _ = writeln!(
        out,
        "{}{{result=\"merged\"}} {}",
        m::CLUSTER_SESSIONS,
        COUNTERS.sessions_merged.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "{}{{result=\"not_gossiped\"}} {}",
        m::CLUSTER_SESSIONS,
        COUNTERS.sessions_not_gossiped.load(Ordering::Relaxed)
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
