//! What the soak knows while it runs: when each node and backend was
//! unavailable (so that a failure can be told explained or not), the
//! faults injected, the violations found, and the traffic counters the
//! sampler turns into a time series.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Periods when something was unavailable: `[from, to)`, `to` open while
/// it lasts.
#[derive(Debug, Default)]
pub struct Periods(Mutex<Vec<(Instant, Option<Instant>)>>);

impl Periods {
    pub fn begin(&self, at: Instant) {
        self.0.lock().unwrap().push((at, None));
    }

    pub fn end(&self, at: Instant) {
        if let Some(last) = self.0.lock().unwrap().last_mut() {
            if last.1.is_none() {
                last.1 = Some(at);
            }
        }
    }

    /// Whether a period overlaps `[a - grace, b + grace]`.
    pub fn during(&self, a: Instant, b: Instant, grace: Duration) -> bool {
        let (a, b) = (a.checked_sub(grace).unwrap_or(a), b + grace);
        self.0.lock().unwrap().iter().any(|&(from, to)| from <= b && to.is_none_or(|to| to >= a))
    }

    pub fn now_open(&self) -> bool {
        self.0.lock().unwrap().last().is_some_and(|p| p.1.is_none())
    }
}

/// One fault as injected, for the report and the plots.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub kind: &'static str,
    pub target: String,
    /// Seconds since the start of the run.
    pub start_s: f64,
    pub end_s: f64,
    pub detail: String,
}

/// A broken invariant, with when and what.
#[derive(Debug, Clone)]
pub struct Violation {
    pub at_s: f64,
    pub invariant: &'static str,
    pub detail: String,
}

/// How long after a node or backend is back a failure still counts as
/// explained by its outage (detection by checks and gossip, reconnects).
pub const GRACE: Duration = Duration::from_secs(3);

pub struct World {
    pub start: Instant,
    /// Killed (kill to ready again), per node.
    pub node_down: Vec<Periods>,
    /// Killed (kill to restarted and checked up), per backend.
    pub backend_down: Vec<Periods>,
    /// Drained through the admin API (drain to enable), per backend.
    pub backend_drained: Vec<Periods>,
    pub faults: Mutex<Vec<FaultRecord>>,
    pub violations: Mutex<Vec<Violation>>,
    /// Failures explained by a fault: when (seconds) and what.
    pub explained: Mutex<Vec<(f64, String)>>,
    pub rest_ok: AtomicU64,
    pub rest_failed: AtomicU64,
    pub tls_ok: AtomicU64,
    pub agent_connects: AtomicU64,
    pub agent_failed: AtomicU64,
    pub agent_moves: AtomicU64,
    pub heartbeats: AtomicU64,
    pub tunnels_open: AtomicU64,
    /// REST latencies (µs) since the sampler last took them.
    pub rest_latencies: Mutex<Vec<u32>>,
    /// Certificates (PEM) every node has served, for the TLS client's roots.
    pub certs: Mutex<Vec<String>>,
}

impl World {
    pub fn new(nodes: usize, backends: usize) -> World {
        World {
            start: Instant::now(),
            node_down: (0..nodes).map(|_| Periods::default()).collect(),
            backend_down: (0..backends).map(|_| Periods::default()).collect(),
            backend_drained: (0..backends).map(|_| Periods::default()).collect(),
            faults: Mutex::default(),
            violations: Mutex::default(),
            explained: Mutex::default(),
            rest_ok: AtomicU64::new(0),
            rest_failed: AtomicU64::new(0),
            tls_ok: AtomicU64::new(0),
            agent_connects: AtomicU64::new(0),
            agent_failed: AtomicU64::new(0),
            agent_moves: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            tunnels_open: AtomicU64::new(0),
            rest_latencies: Mutex::default(),
            certs: Mutex::default(),
        }
    }

    pub fn secs(&self, at: Instant) -> f64 {
        at.duration_since(self.start).as_secs_f64()
    }

    pub fn violation(&self, invariant: &'static str, detail: String) {
        let at_s = self.secs(Instant::now());
        eprintln!("soak: [{at_s:7.1}s] VIOLATION {invariant}: {detail}");
        self.violations.lock().unwrap().push(Violation { at_s, invariant, detail });
    }

    pub fn explained(&self, what: String) {
        let at = self.secs(Instant::now());
        self.explained.lock().unwrap().push((at, what));
    }

    pub fn fault(&self, record: FaultRecord) {
        eprintln!(
            "soak: [{:7.1}s] fault {} {} for {:.1}s: {}",
            record.start_s,
            record.kind,
            record.target,
            record.end_s - record.start_s,
            record.detail
        );
        self.faults.lock().unwrap().push(record);
    }

    /// A failure `what` seen through node `node` between `from` and now:
    /// explained when that node was down then, else a violation of `invariant`.
    pub fn node_failure(&self, node: usize, from: Instant, invariant: &'static str, what: String) {
        if self.node_down[node].during(from, Instant::now(), GRACE) {
            self.explained(format!("{invariant}: node n{} was killed", node + 1));
        } else {
            self.violation(invariant, what);
        }
    }

    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
