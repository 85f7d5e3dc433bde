//! Active health checks: one small task per (server, check), each with its
//! own interval, a random start offset and ±10 % jitter so that checks of
//! many servers spread out. An HTTP check is one request on a kept-alive
//! connection; a TCP check is one connect (and TLS handshake, for a pool
//! with `tls`); both are made by a [`Probe`] from `proxy`. `fall` consecutive
//! failures take the check down, `rise` consecutive successes bring it back;
//! a server is up while all of its checks are.
//!
//! Started by `control` for each config; results are written into the
//! servers' [`ServerState`] and the [`EventLog`]. Never touches the request
//! path.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::events::EventLog;
use super::server::{ServerState, Transition};
use crate::config::{CheckConfig, CheckKind};
use crate::metrics::COUNTERS;

/// One check's exchange with its server: `Ok`, or why it failed. Made by
/// `proxy` (`proxy::outbound::check`), which connects the way requests do
/// (the pool's TLS, PROXY header, timeouts) and speaks HTTP/1.1 with the
/// request path's own code; this module only schedules and counts.
pub trait Probe: Send + Sync + 'static {
    fn probe<'a>(&'a self, check: &'a CheckConfig) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

/// Starts one check of one server into `set`.
pub fn spawn_check(
    server: Arc<ServerState>,
    idx: usize,
    check: CheckConfig,
    probe: Arc<dyn Probe>,
    events: &Arc<EventLog>,
    set: &mut JoinSet<()>,
) {
    set.spawn(run_check(server, idx, check, probe, events.clone()));
}

fn describe(check: &CheckConfig) -> String {
    match &check.kind {
        CheckKind::Http { method, path, .. } => format!("{method} {path}"),
        CheckKind::Tcp => "tcp connect".to_string(),
    }
}

fn jittered(interval: Duration) -> Duration {
    let f = 0.9 + fastrand::f64() * 0.2;
    interval.mul_f64(f)
}

async fn run_check(
    server: Arc<ServerState>,
    idx: usize,
    check: CheckConfig,
    probe: Arc<dyn Probe>,
    events: Arc<EventLog>,
) {
    let what = describe(&check);
    // Reports that arrive during the start offset count too.
    let mut reports_seen = server.peer_down_reports.load(Ordering::Relaxed);
    let offset = check.interval.min(Duration::from_secs(1)).mul_f64(fastrand::f64());
    tokio::time::sleep(offset).await;
    let mut down = server.check_is_down(idx);
    let (mut fails, mut oks) = (0u32, 0u32);
    loop {
        let started = tokio::time::Instant::now();
        let result = probe.probe(&check).await;
        let latency_us = started.elapsed().as_micros() as u64;
        server.stats.record_check(result.is_ok(), latency_us);
        let total = if result.is_ok() { &COUNTERS.checks_ok } else { &COUNTERS.checks_failed };
        total.fetch_add(1, Ordering::Relaxed);
        (oks, fails) = if result.is_ok() { (oks.saturating_add(1), 0) } else { (0, fails.saturating_add(1)) };
        let change = match &result {
            Ok(()) if down && oks >= check.rise => {
                down = false;
                server.set_check(idx, true).map(|t| (t, format!("{what} passed {oks} times in a row")))
            }
            Err(reason) if !down && fails >= check.fall => {
                down = true;
                server.set_check(idx, false).map(|t| (t, format!("{what} failed {fails} times in a row: {reason}")))
            }
            _ => None,
        };
        if let Some((t, reason)) = change {
            let state = if t == Transition::WentDown { "DOWN" } else { "UP" };
            if t == Transition::WentDown {
                tracing::warn!(pool = %server.pool, server = %server.name, latency_us, "server is {state}: {reason}");
            } else {
                tracing::info!(pool = %server.pool, server = %server.name, latency_us, "server is {state}: {reason}");
            }
            events.push("health", Some(&server.pool), Some(&server.name), format!("{state}: {reason}"));
        }
        // After a failure that has not taken the server down yet (HAProxy's
        // `fastinter`), or a peer's "down" (a report that arrived while this
        // probe ran), probe again quickly until this check decides: a hung
        // server is out after about `fall` timeouts, and failover beats the
        // slowest node's `interval × fall`.
        let reports = server.peer_down_reports.load(Ordering::Relaxed);
        let reported = reports != reports_seen;
        reports_seen = reports;
        let suspect = !down && (result.is_err() || reported);
        let wait = if suspect { check.interval.min(SUSPECT_INTERVAL) } else { jittered(check.interval) };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = server.probe_now.notified(), if !down => {
                reports_seen = server.peer_down_reports.load(Ordering::Relaxed);
                tracing::debug!(pool = %server.pool, server = %server.name, "a peer sees the server down: probing now");
            }
        }
    }
}

/// Probe period after a failed check that has not taken the server down
/// yet, or while a peer reports it down and this node's check has not
/// decided.
const SUSPECT_INTERVAL: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    /// A bare TCP connect to `addr`, as the proxy's probe does without TLS.
    struct Connect(std::net::SocketAddr);

    impl Probe for Connect {
        fn probe<'a>(&'a self, _: &'a CheckConfig) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
            Box::pin(async move { tokio::net::TcpStream::connect(self.0).await.map(drop).map_err(|e| e.to_string()) })
        }
    }

    async fn until(cond: impl Fn() -> bool) {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A TCP check (rise 2) of a server on a port nobody listens on.
    fn tcp_check_on_a_closed_port(
        interval: Duration,
        fall: u32,
    ) -> (Arc<ServerState>, Arc<EventLog>, tokio::task::JoinHandle<()>) {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let server = Arc::new(ServerState::new("p", "s", addr, 1));
        let events = Arc::new(EventLog::new(10));
        let check =
            CheckConfig { kind: CheckKind::Tcp, interval, timeout: Duration::from_secs(1), fall, rise: 2, tls: None };
        let task = tokio::spawn(run_check(server.clone(), 0, check, Arc::new(Connect(addr)), events.clone()));
        (server, events, task)
    }

    #[tokio::test(start_paused = true)]
    async fn fall_and_rise_count_consecutive_results() {
        let (server, events, task) = tcp_check_on_a_closed_port(Duration::from_secs(5), 2);
        let addr = server.addr;
        let failed = || server.stats.checks_failed.load(Ordering::Relaxed);
        let passed = || server.stats.checks_ok.load(Ordering::Relaxed);

        until(|| failed() == 1).await;
        assert!(server.is_up(), "one failure is below fall = 2");
        until(|| failed() == 2).await;
        assert!(!server.is_up(), "two consecutive failures take it down");
        assert_eq!(events.recent(1)[0].message.split(':').next(), Some("DOWN"));

        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        until(|| passed() == 1).await;
        assert!(!server.is_up(), "one success is below rise = 2");
        until(|| passed() == 2).await;
        assert!(server.is_up(), "two consecutive successes bring it back");
        assert!(events.recent(1)[0].message.starts_with("UP"));
        assert_eq!(server.stats.state_changes.load(Ordering::Relaxed), 2);
        drop(listener);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_report_makes_checks_probe_quickly() {
        let (server, _events, task) = tcp_check_on_a_closed_port(Duration::from_secs(60), 3);
        let failed = || server.stats.checks_failed.load(Ordering::Relaxed);
        until(|| failed() == 1).await;
        let reported = tokio::time::Instant::now();
        server.report_peer_down();
        until(|| !server.is_up()).await;
        let took = reported.elapsed();
        assert_eq!(failed(), 3, "fall = 3 failures, the last two right after the report");
        assert!(took < Duration::from_secs(1), "down {took:?} after a peer's report; the interval is 60 s");
        // Once down, the normal interval applies again.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(failed(), 3);
        task.abort();
    }
}
