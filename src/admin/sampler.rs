//! Once a second, copies the counters the data path keeps (totals and
//! latency histograms) into a short ring, so the status API can report rates
//! and percentiles over the last ten seconds without touching the request
//! path. Runs until the node shuts down.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::control::Control;
use crate::metrics::{self, COUNTERS};

const WINDOW: usize = 11;

#[derive(Clone)]
struct Sample {
    at: Instant,
    requests: u64,
    responses_5xx: u64,
    latency: [u64; 15],
    servers: HashMap<(String, String), (u64, [u64; 15])>,
}

/// Rates derived from the ring.
#[derive(Debug, Clone, Default)]
pub struct Rates {
    pub requests_per_second: f64,
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Per (pool, server).
    pub servers: HashMap<(String, String), ServerRates>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ServerRates {
    pub requests_per_second: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

#[derive(Default)]
pub struct Sampler {
    ring: Mutex<VecDeque<Sample>>,
}

fn take(control: &Control) -> Sample {
    let snap = control.snapshot();
    let mut servers = HashMap::new();
    for p in &snap.pools {
        for s in &p.servers {
            let (hist, _) = s.state.stats.response_time.read();
            servers.insert((p.cfg.name.clone(), s.name.clone()), (s.state.stats.total_responses(), hist));
        }
    }
    Sample {
        at: Instant::now(),
        requests: COUNTERS.requests.load(Ordering::Relaxed),
        responses_5xx: COUNTERS.responses[5].load(Ordering::Relaxed),
        latency: COUNTERS.request_duration.read().0,
        servers,
    }
}

impl Sampler {
    pub fn sample(&self, control: &Control) {
        let s = take(control);
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == WINDOW {
            ring.pop_front();
        }
        ring.push_back(s);
    }

    /// Rates between the oldest sample in the ring and now.
    pub fn rates(&self, control: &Control) -> Rates {
        let now = take(control);
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let Some(old) = ring.front() else { return Rates::default() };
        let secs = now.at.duration_since(old.at).as_secs_f64().max(0.001);
        let requests = now.requests.saturating_sub(old.requests);
        let errors = now.responses_5xx.saturating_sub(old.responses_5xx);
        let lat = metrics::delta(&now.latency, &old.latency);
        let ms = |q| metrics::quantile(&lat, q).map(|s| s * 1000.0);
        let mut servers = HashMap::new();
        for (k, (total, hist)) in &now.servers {
            let (rate, h) = match old.servers.get(k) {
                Some((t0, h0)) => (total.saturating_sub(*t0) as f64 / secs, metrics::delta(hist, h0)),
                None => (0.0, [0; 15]),
            };
            let q = |x| metrics::quantile(&h, x).map(|s| s * 1000.0);
            servers.insert(k.clone(), ServerRates { requests_per_second: rate, p50_ms: q(0.5), p95_ms: q(0.95) });
        }
        Rates {
            requests_per_second: requests as f64 / secs,
            error_rate: if requests == 0 { 0.0 } else { errors as f64 / requests as f64 },
            p50_ms: ms(0.5),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            servers,
        }
    }
}

/// Samples every second until `control` is gone.
pub async fn run(sampler: Arc<Sampler>, control: std::sync::Weak<Control>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(c) = control.upgrade() else { return };
        sampler.sample(&c);
    }
}
