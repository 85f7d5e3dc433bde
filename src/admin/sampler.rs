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
    servers: HashMap<(String, String), ServerSample>,
}

/// One server's counters at a sample.
#[derive(Clone, Copy)]
struct ServerSample {
    responses: u64,
    responses_5xx: u64,
    latency: [u64; 15],
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
    pub p99_ms: Option<f64>,
    pub responses_5xx_per_second: f64,
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
            let stats = &s.state.stats;
            let sample = ServerSample {
                responses: stats.total_responses(),
                responses_5xx: stats.responses[5].load(Ordering::Relaxed),
                latency: stats.response_time.read().0,
            };
            servers.insert((p.cfg.name.clone(), s.name.clone()), sample);
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
        match ring.front() {
            Some(old) => between(old, &now),
            None => Rates::default(),
        }
    }
}

/// The rates from sample `old` to sample `now`. Pure.
fn between(old: &Sample, now: &Sample) -> Rates {
    let secs = now.at.duration_since(old.at).as_secs_f64().max(0.001);
    let requests = now.requests.saturating_sub(old.requests);
    let errors = now.responses_5xx.saturating_sub(old.responses_5xx);
    let lat = metrics::delta(&now.latency, &old.latency);
    let ms = |q| metrics::quantile(&lat, q).map(|s| s * 1000.0);
    let mut servers = HashMap::new();
    for (k, s) in &now.servers {
        let Some(s0) = old.servers.get(k) else {
            servers.insert(k.clone(), ServerRates::default());
            continue;
        };
        let per_second = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
        let h = metrics::delta(&s.latency, &s0.latency);
        let q = |x| metrics::quantile(&h, x).map(|s| s * 1000.0);
        let rates = ServerRates {
            requests_per_second: per_second(s.responses, s0.responses),
            p50_ms: q(0.5),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            responses_5xx_per_second: per_second(s.responses_5xx, s0.responses_5xx),
        };
        servers.insert(k.clone(), rates);
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

/// Samples every second until `control` is gone.
pub async fn run(sampler: Arc<Sampler>, control: std::sync::Weak<Control>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(c) = control.upgrade() else { return };
        sampler.sample(&c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, responses: u64, responses_5xx: u64, slow: u64) -> Sample {
        // `slow` answers in the 100-250 ms bucket, the rest under 1 ms.
        let mut latency = [0u64; 15];
        latency[0] = responses - slow;
        latency[metrics::BUCKETS_US.iter().position(|b| *b == 250_000).unwrap()] = slow;
        let server = ServerSample { responses, responses_5xx, latency };
        Sample {
            at,
            requests: responses,
            responses_5xx,
            latency,
            servers: HashMap::from([(("p".to_string(), "s1".to_string()), server)]),
        }
    }

    #[test]
    fn a_server_rates_its_requests_errors_and_tail_between_two_samples() {
        let t0 = Instant::now();
        let old = sample(t0, 1_000, 10, 0);
        let now = sample(t0 + Duration::from_secs(10), 2_000, 60, 20);
        let r = between(&old, &now);
        assert_eq!(r.requests_per_second, 100.0);
        assert_eq!(r.error_rate, 0.05);
        let s = r.servers[&("p".to_string(), "s1".to_string())];
        assert_eq!((s.requests_per_second, s.responses_5xx_per_second), (100.0, 5.0));
        // 2 % of the answers were slow: p50 and p95 are fast, p99 is slow.
        assert!(s.p50_ms.unwrap() < 1.0 && s.p95_ms.unwrap() < 1.0, "{s:?}");
        assert!((100.0..=250.0).contains(&s.p99_ms.unwrap()), "{s:?}");
    }

    #[test]
    fn a_server_new_since_the_old_sample_has_no_rates_yet() {
        let t0 = Instant::now();
        let mut old = sample(t0, 10, 0, 0);
        old.servers.clear();
        let r = between(&old, &sample(t0 + Duration::from_secs(1), 20, 0, 0));
        let s = r.servers[&("p".to_string(), "s1".to_string())];
        assert_eq!((s.requests_per_second, s.p99_ms), (0.0, None));
    }
}
