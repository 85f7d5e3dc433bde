//! What the soak measures and concludes: a sample every two seconds (the
//! traffic's rates, errors and p99; each node's memory, descriptors and
//! admin API latency; the tunnels per backend), the checks at the end
//! (every node agrees on every pin, no pin lost, memory and descriptors
//! flat, no panic or unexplained ERROR line), and the report: `series.csv`,
//! `faults.csv` and `report.md` (plotted by `bench/soak_plot.py`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::agents::http_get;
use crate::lab::{resources, Lab};
use crate::world::World;

/// One node in one sample; `None` fields while it is down.
#[derive(Debug, Clone, Default)]
pub struct NodeSample {
    pub pid: Option<u32>,
    pub rss_kib: Option<u64>,
    pub fds: Option<u64>,
    /// Client connections and tunnels' server sides open now (from the
    /// node's status): the descriptors the load accounts for.
    pub conns: Option<u64>,
    pub admin_ms: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub t: f64,
    pub rest_per_s: f64,
    pub rest_failed: u64,
    pub p99_ms: f64,
    pub connects_per_s: f64,
    pub heartbeats_per_s: f64,
    pub tunnels_open: u64,
    pub nodes: Vec<NodeSample>,
    /// Tunnels per backend, summed over the nodes that answered.
    pub backend_tunnels: Vec<u64>,
}

/// The admin API must answer within this.
const ADMIN_LIMIT_MS: f64 = 100.0;
const EVERY: Duration = Duration::from_secs(2);

/// The backend the agents pool calls active, per the first node that answers.
pub async fn active_backend(lab: &Lab) -> Option<usize> {
    for n in &lab.nodes {
        if let Ok((200, body)) = http_get(n.admin, "/api/v1/status", Duration::from_secs(2)).await {
            let s: sysmanage_node::api::Status = serde_json::from_str(&body).ok()?;
            let pool = s.pools.iter().find(|p| p.name == "agents")?;
            let active = pool.servers.iter().find(|s| s.active)?;
            return lab.backends.iter().position(|b| b.name == active.name);
        }
    }
    None
}

/// Samples every two seconds until `stop`.
pub async fn sampler(lab: Arc<Lab>, world: Arc<World>, mut stop: watch::Receiver<bool>) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(EVERY);
    let (mut ok0, mut failed0, mut connects0, mut beats0) = (0, 0, 0, 0);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return out,
        }
        let now = Instant::now();
        let secs = EVERY.as_secs_f64();
        let ok = world.rest_ok.load(Ordering::Relaxed) + world.tls_ok.load(Ordering::Relaxed);
        let failed = world.rest_failed.load(Ordering::Relaxed);
        let connects = world.agent_connects.load(Ordering::Relaxed);
        let beats = world.heartbeats.load(Ordering::Relaxed);
        let mut lat = std::mem::take(&mut *world.rest_latencies.lock().unwrap());
        lat.sort_unstable();
        let p99 =
            lat.get((lat.len() * 99 / 100).min(lat.len().saturating_sub(1))).map_or(0.0, |&us| us as f64 / 1000.0);
        let mut sample = Sample {
            t: world.secs(now),
            rest_per_s: (ok - ok0) as f64 / secs,
            rest_failed: failed - failed0,
            p99_ms: p99,
            connects_per_s: (connects - connects0) as f64 / secs,
            heartbeats_per_s: (beats - beats0) as f64 / secs,
            tunnels_open: world.tunnels_open.load(Ordering::Relaxed),
            nodes: Vec::new(),
            backend_tunnels: vec![0; lab.backends.len()],
        };
        (ok0, failed0, connects0, beats0) = (ok, failed, connects, beats);
        for (i, n) in lab.nodes.iter().enumerate() {
            let pid = lab.node_pid(i);
            let mut ns = NodeSample { pid, ..NodeSample::default() };
            if let Some((rss, fds)) = pid.and_then(resources) {
                ns.rss_kib = Some(rss);
                ns.fds = Some(fds);
            }
            if pid.is_some() && !world.node_down[i].now_open() {
                let asked = Instant::now();
                match http_get(n.admin, "/api/v1/status", Duration::from_secs(2)).await {
                    Ok((200, body)) => {
                        let ms = asked.elapsed().as_secs_f64() * 1000.0;
                        ns.admin_ms = Some(ms);
                        // A node just back from a kill is still starting.
                        let settling = world.node_down[i].during(asked, asked, Duration::from_secs(10));
                        if ms > ADMIN_LIMIT_MS && !settling {
                            world.violation(
                                "the admin API answers within 100 ms",
                                format!("{}: GET /api/v1/status took {ms:.0} ms", n.name),
                            );
                        }
                        if let Ok(s) = serde_json::from_str::<sysmanage_node::api::Status>(&body) {
                            ns.conns = Some(s.totals.active_connections + s.totals.websocket_tunnels);
                            if let Some(pool) = s.pools.iter().find(|p| p.name == "agents") {
                                for sv in &pool.servers {
                                    if let Some(b) = lab.backends.iter().position(|b| b.name == sv.name) {
                                        sample.backend_tunnels[b] += sv.websocket_tunnels;
                                    }
                                }
                            }
                        }
                    }
                    other => {
                        if !world.node_down[i].during(asked, Instant::now(), Duration::from_secs(10)) {
                            world.violation("the admin API answers within 100 ms", format!("{}: {other:?}", n.name));
                        }
                    }
                }
            }
            sample.nodes.push(ns);
        }
        out.push(sample);
    }
}

/// At the end, with the traffic stopped: every live node holds the same
/// pin for every agent, the one the agent was last on.
pub async fn check_pins(lab: &Lab, world: &World, homes: &[(String, Option<String>)]) -> (usize, usize) {
    let (mut agreed, mut checked) = (0, 0);
    for (host, home) in homes {
        let Some(home) = home else { continue };
        checked += 1;
        let mut seen = Vec::new();
        for n in &lab.nodes {
            let server = match http_get(n.admin, &format!("/api/v1/sessions?key={host}"), Duration::from_secs(5)).await
            {
                Ok((200, body)) => serde_json::from_str::<Vec<sysmanage_node::api::SessionRecordView>>(&body)
                    .ok()
                    .and_then(|v| v.into_iter().find(|r| r.pool == "agents"))
                    .map(|r| r.server),
                _ => None,
            };
            seen.push((n.name.clone(), server));
        }
        if seen.iter().all(|(_, s)| s.as_deref() == Some(home.as_str())) {
            agreed += 1;
        } else if seen.iter().any(|(_, s)| s.is_none()) {
            world.violation("no pin is lost", format!("{host} (last on {home}): {seen:?}"));
        } else {
            world.violation("every node agrees on every pin", format!("{host} (last on {home}): {seen:?}"));
        }
    }
    (agreed, checked)
}

/// Session counts per server as each node sees them (all must be equal).
pub async fn check_counts(lab: &Lab, world: &World) -> Vec<(String, String)> {
    let mut views = Vec::new();
    for n in &lab.nodes {
        let view = match http_get(n.admin, "/api/v1/sessions", Duration::from_secs(5)).await {
            Ok((200, body)) => serde_json::from_str::<sysmanage_node::api::SessionsView>(&body)
                .map(|v| format!("{:?}", v.pools.get("agents")))
                .unwrap_or_else(|e| format!("unreadable: {e}")),
            other => format!("no answer: {other:?}"),
        };
        views.push((n.name.clone(), view));
    }
    if views.windows(2).any(|w| w[0].1 != w[1].1) {
        world.violation("every node agrees on every pin", format!("session counts differ: {views:?}"));
    }
    views
}

/// Memory and descriptors flat: for each process lifetime long enough,
/// growth from `baseline_s` after its start to its last sample under 10 %
/// (or under a small absolute slack: 4 MiB, 20 descriptors). Descriptors
/// are counted beyond those of the open connections (a client connection,
/// and a tunnel's server side), which follow the load as agents move
/// between nodes.
pub fn check_growth(lab: &Lab, world: &World, samples: &[Sample], baseline_s: f64) -> Vec<String> {
    let mut rows = Vec::new();
    for (i, n) in lab.nodes.iter().enumerate() {
        // Runs of samples with the same PID.
        let mut runs: Vec<Vec<(f64, u64, u64)>> = Vec::new();
        let mut last_pid = None;
        for s in samples {
            let ns = &s.nodes[i];
            let (Some(pid), Some(rss), Some(fds), Some(conns)) = (ns.pid, ns.rss_kib, ns.fds, ns.conns) else {
                continue;
            };
            if last_pid != Some(pid) {
                runs.push(Vec::new());
                last_pid = Some(pid);
            }
            runs.last_mut().unwrap().push((s.t, rss, fds.saturating_sub(conns)));
        }
        for run in runs {
            let start = run[0].0;
            let Some(base) = run.iter().find(|r| r.0 >= start + baseline_s) else { continue };
            let end = run.last().unwrap();
            if end.0 - base.0 < 30.0 {
                continue;
            }
            let grew = |a: u64, b: u64, slack: u64| b > a + slack && (b as f64) > a as f64 * 1.10;
            let row = format!(
                "{}: {:.0}s..{:.0}s RSS {:.1} -> {:.1} MiB, descriptors beyond connections {} -> {}",
                n.name,
                base.0,
                end.0,
                base.1 as f64 / 1024.0,
                end.1 as f64 / 1024.0,
                base.2,
                end.2
            );
            if grew(base.1, end.1, 4096) || grew(base.2, end.2, 20) {
                world.violation("memory and descriptors flat", row.clone());
            }
            rows.push(row);
        }
    }
    rows
}

/// Panics and ERROR lines in the nodes' logs. Every ERROR line is a
/// violation unless a fault of the run explains it (none is known to).
pub fn check_logs(lab: &Lab, world: &World) -> BTreeMap<String, usize> {
    let mut found = BTreeMap::new();
    for n in &lab.nodes {
        let text = std::fs::read_to_string(n.log()).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("panicked") || l.contains(" ERROR ")) {
            // The message without the timestamp.
            let what = line.split_once(" ERROR ").map_or(line, |(_, m)| m);
            let what: String = what.chars().take(200).collect();
            *found.entry(format!("{}: {what}", n.name)).or_default() += 1;
        }
    }
    for (line, count) in &found {
        world.violation("no panic or unexplained ERROR line", format!("{count} × {line}"));
    }
    found
}

pub fn write_csv(dir: &std::path::Path, lab: &Lab, world: &World, samples: &[Sample]) {
    let mut csv = String::from("t,rest_per_s,rest_failed,p99_ms,connects_per_s,heartbeats_per_s,tunnels_open");
    for n in &lab.nodes {
        let _ = write!(csv, ",{0}_rss_mib,{0}_fds,{0}_conns,{0}_admin_ms", n.name);
    }
    for b in &lab.backends {
        let _ = write!(csv, ",{}_tunnels", b.name);
    }
    csv.push('\n');
    for s in samples {
        let _ = write!(
            csv,
            "{:.1},{:.1},{},{:.2},{:.1},{:.1},{}",
            s.t, s.rest_per_s, s.rest_failed, s.p99_ms, s.connects_per_s, s.heartbeats_per_s, s.tunnels_open
        );
        for n in &s.nodes {
            let opt = |v: Option<String>| v.unwrap_or_default();
            let _ = write!(
                csv,
                ",{},{},{},{}",
                opt(n.rss_kib.map(|k| format!("{:.2}", k as f64 / 1024.0))),
                opt(n.fds.map(|f| f.to_string())),
                opt(n.conns.map(|c| c.to_string())),
                opt(n.admin_ms.map(|m| format!("{m:.1}")))
            );
        }
        for t in &s.backend_tunnels {
            let _ = write!(csv, ",{t}");
        }
        csv.push('\n');
    }
    std::fs::write(dir.join("series.csv"), csv).unwrap();
    let mut faults = String::from("start_s,end_s,kind,target,detail\n");
    for f in world.faults.lock().unwrap().iter() {
        let _ = writeln!(
            faults,
            "{:.1},{:.1},{},{},\"{}\"",
            f.start_s,
            f.end_s,
            f.kind,
            f.target,
            f.detail.replace('"', "'")
        );
    }
    std::fs::write(dir.join("faults.csv"), faults).unwrap();
}
