//! The chaos soak (run by `bench/soak.sh`): a three-node cluster with a
//! fleet of agents on loopback, faults one after another, invariants
//! checked all the time, and a report.
//!
//! ```text
//! soak [--duration 30m] [--seed N] [--agents 500] [--rest-rate 40]
//!      [--fault-every 20..60] [--bin target/release/sysmanage-node] [--out DIR]
//! soak backend NAME ADDR      (internal: one sample backend process)
//! ```
//!
//! It starts three sample backends that answer like SysManage (the demo's),
//! three nodes joined into one cluster (`sysmanage-node run`, the
//! recommended SysManage setup: `primary` pools with sticky agents), the
//! agents and the REST traffic ([`agents`]), and the faults ([`faults`]).
//! Every failure a client sees is either explained by a fault (a killed
//! node's clients, a killed backend's tunnels) or a violation; the checks
//! at the end and the report are in [`report`]. Exit status 1 when any
//! invariant broke.

mod agents;
mod faults;
mod lab;
mod report;
mod world;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use lab::Lab;
use world::World;

struct Args {
    duration: Duration,
    seed: u64,
    agents: usize,
    rest_rate: u64,
    every: (u64, u64),
    bin: PathBuf,
    out: PathBuf,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        duration: Duration::from_secs(30 * 60),
        seed: 1,
        agents: 500,
        rest_rate: 40,
        every: (20, 60),
        bin: PathBuf::from("target/release/sysmanage-node"),
        out: PathBuf::from("bench/results/soak"),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--duration" => a.duration = humantime::parse_duration(value).map_err(|e| bad(&e))?,
            "--seed" => a.seed = value.parse().map_err(|e| bad(&e))?,
            "--agents" => a.agents = value.parse().map_err(|e| bad(&e))?,
            "--rest-rate" => a.rest_rate = value.parse().map_err(|e| bad(&e))?,
            "--fault-every" => {
                let (lo, hi) = value.split_once("..").ok_or_else(|| bad(&"expected LO..HI seconds"))?;
                a.every = (lo.parse().map_err(|e| bad(&e))?, hi.parse().map_err(|e| bad(&e))?);
                if a.every.0 == 0 || a.every.0 > a.every.1 {
                    return Err(bad(&"expected 0 < LO <= HI"));
                }
            }
            "--bin" => a.bin = PathBuf::from(value),
            "--out" => a.out = PathBuf::from(value),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if args.first().map(String::as_str) == Some("backend") {
        let (Some(name), Some(addr)) = (args.get(1), args.get(2).and_then(|a| a.parse().ok())) else {
            eprintln!("usage: soak backend NAME ADDR");
            return ExitCode::from(2);
        };
        return runtime.block_on(backend(name, addr));
    }
    let args = match parse_args(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    if runtime.block_on(run(args)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// One sample backend until killed; a restart may find its port in TIME_WAIT
/// for a moment, so binding is retried.
async fn backend(name: &str, addr: std::net::SocketAddr) -> ExitCode {
    let (_tx, rx) = watch::channel(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sysmanage_node::demo::backend::SampleBackend::start_on(name, addr, rx.clone()).await {
            Ok(b) => {
                b.stopped().await;
                return ExitCode::SUCCESS;
            }
            Err(e) if Instant::now() > deadline => {
                eprintln!("backend {name}: cannot listen on {addr}: {e}");
                return ExitCode::from(1);
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn run(args: Args) -> bool {
    sysmanage_node::tls::install_crypto_provider();
    fastrand::seed(args.seed);
    // Absolute: the nodes' configs name files by path, relative to themselves.
    let _ = std::fs::create_dir_all(&args.out);
    let out = std::fs::canonicalize(&args.out).unwrap_or_else(|_| args.out.clone());
    let lab_dir = out.join("lab");
    let _ = std::fs::remove_dir_all(&lab_dir);
    let lab = Arc::new(Lab::new(&lab_dir, &args.bin));
    let world = Arc::new(World::new(lab.nodes.len(), lab.backends.len()));
    let version = std::process::Command::new(&args.bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("cannot run {}: {e}", args.bin.display()));
    eprintln!(
        "soak: {version}, {} agents, {} REST requests/s, a fault every {}..{} s, seed {}, for {:?}; files in {}",
        args.agents,
        args.rest_rate,
        args.every.0,
        args.every.1,
        args.seed,
        args.duration,
        lab_dir.display()
    );

    for n in &lab.nodes {
        world.certs.lock().unwrap().push(n.rotate_cert());
    }
    lab.write_configs();
    for i in 0..lab.backends.len() {
        lab.start_backend(i);
        if !lab.backend_ready(i).await {
            eprintln!("soak: backend {} did not start", lab.backends[i].name);
            lab.stop_all();
            return false;
        }
    }
    for i in 0..lab.nodes.len() {
        lab.start_node(i);
    }
    for i in 0..lab.nodes.len() {
        if !lab.node_ready(i).await {
            eprintln!("soak: node {} did not start: see {}", lab.nodes[i].name, lab.nodes[i].log().display());
            lab.stop_all();
            return false;
        }
    }
    if !cluster_formed(&lab).await {
        eprintln!("soak: the three nodes did not see each other live within 30 s");
        lab.stop_all();
        return false;
    }

    let (stop_tx, stop) = watch::channel(false);
    let sampler = tokio::spawn(report::sampler(lab.clone(), world.clone(), stop.clone()));
    let nodes: Vec<_> = lab.nodes.iter().map(|n| (n.http, n.https)).collect();
    let rest = tokio::spawn(agents::rest(world.clone(), nodes.clone(), args.rest_rate, stop.clone()));
    let backends: Vec<String> = lab.backends.iter().map(|b| b.name.clone()).collect();
    let mut homes = Vec::new();
    let mut fleet = Vec::new();
    for i in 0..args.agents {
        let agent = agents::Agent {
            hostname: format!("agent-{:04}.soak.local", i + 1),
            nodes: nodes.iter().map(|n| n.0).collect(),
            backends: backends.clone(),
            world: world.clone(),
            home: Arc::default(),
        };
        homes.push((agent.hostname.clone(), agent.home.clone()));
        fleet.push(tokio::spawn(agent.run(stop.clone())));
    }
    let schedule = faults::Schedule {
        rng: fastrand::Rng::with_seed(args.seed),
        every: args.every,
        until: Instant::now() + args.duration,
    };
    let faults = tokio::spawn(schedule.run(lab.clone(), world.clone(), stop.clone()));

    tokio::time::sleep(args.duration).await;
    eprintln!("soak: stopping the traffic");
    let stopped_s = world.secs(Instant::now());
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), faults).await;
    for a in fleet {
        let _ = tokio::time::timeout(Duration::from_secs(15), a).await;
    }
    let _ = rest.await;
    // Samples taken while the agents were closing their tunnels measure
    // the stop, not the run (a sample's reads take up to a second or two
    // after its time).
    let samples: Vec<_> = sampler.await.unwrap_or_default().into_iter().filter(|s| s.t + 2.5 < stopped_s).collect();
    // Let the last records reach every node.
    tokio::time::sleep(Duration::from_secs(10)).await;

    let last: Vec<(String, Option<String>)> =
        homes.iter().map(|(h, home)| (h.clone(), home.lock().unwrap().as_ref().map(|(b, _)| b.clone()))).collect();
    let (agreed, checked) = report::check_pins(&lab, &world, &last).await;
    let counts = report::check_counts(&lab, &world).await;
    let baseline = (args.duration.as_secs_f64() / 3.0).min(300.0);
    let growth = report::check_growth(&lab, &world, &samples, baseline);
    lab.stop_all();
    let logs = report::check_logs(&lab, &world);
    report::write_csv(&args.out, &lab, &world, &samples);
    let ok = world.violations.lock().unwrap().is_empty();
    let text = summary(&args, &version, &world, &samples, (agreed, checked), &counts, &growth, &logs);
    std::fs::write(args.out.join("report.md"), &text).unwrap();
    eprintln!("{text}");
    ok
}

/// Whether every node sees three live members, within 30 s.
async fn cluster_formed(lab: &Lab) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let mut all = true;
        for n in &lab.nodes {
            let live = match agents::http_get(n.admin, "/api/v1/members", Duration::from_secs(2)).await {
                Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["members"].as_array().map(|m| m.iter().filter(|m| m["state"] == "live").count()))
                    .unwrap_or(0),
                _ => 0,
            };
            all &= live == lab.nodes.len();
        }
        if all {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// The invariants, in the order of the report.
const INVARIANTS: [&str; 11] = [
    "every Upgrade answered 101",
    "agents stay on their backend",
    "tunnels stay open",
    "REST without errors",
    "every node agrees on every pin",
    "no pin is lost",
    "no panic or unexplained ERROR line",
    "memory and descriptors flat",
    "the admin API answers within 100 ms",
    "the admin API answers",
    "certificates rotate without a restart",
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[allow(clippy::too_many_arguments)]
fn summary(
    args: &Args,
    version: &str,
    world: &World,
    samples: &[report::Sample],
    (agreed, checked): (usize, usize),
    counts: &[(String, String)],
    growth: &[String],
    logs: &BTreeMap<String, usize>,
) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let violations = world.violations.lock().unwrap().clone();
    let faults = world.faults.lock().unwrap().clone();
    let explained = world.explained.lock().unwrap().clone();
    let mut o = String::new();
    let verdict =
        if violations.is_empty() { "PASS".to_string() } else { format!("FAIL ({} violations)", violations.len()) };
    let _ = writeln!(o, "# Soak report: {verdict}\n");
    let _ = writeln!(
        o,
        "{version}; {} agents; {} REST requests/s (one in five over TLS); a fault every {}..{} s; seed {}; {:.0} s; \
         3 nodes, 3 backends on loopback; {} CPUs.\n",
        args.agents,
        args.rest_rate,
        args.every.0,
        args.every.1,
        args.seed,
        args.duration.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(o, "## Invariants\n\n| invariant | result | first violation |\n|---|---|---|");
    for inv in INVARIANTS {
        let broken: Vec<_> = violations.iter().filter(|v| v.invariant == inv).collect();
        let result = if broken.is_empty() { "held".to_string() } else { format!("**broken {} times**", broken.len()) };
        let first =
            broken.first().map_or(String::new(), |v| format!("{:.0} s: {}", v.at_s, v.detail.replace('|', "\\|")));
        let _ = writeln!(o, "| {inv} | {result} | {first} |");
    }
    let p99s: Vec<f64> = samples.iter().filter(|s| s.p99_ms > 0.0).map(|s| s.p99_ms).collect();
    let admin: Vec<f64> = samples.iter().flat_map(|s| s.nodes.iter().filter_map(|n| n.admin_ms)).collect();
    let _ = writeln!(o, "\n## Traffic\n");
    let _ = writeln!(
        o,
        "- REST: {} answered 200 over HTTP and {} over TLS, {} failed (each explained or a violation above); \
         p99 per 2 s window: median {:.1} ms, worst {:.1} ms.",
        world.rest_ok.load(Relaxed),
        world.tls_ok.load(Relaxed),
        world.rest_failed.load(Relaxed),
        median(p99s.clone()),
        p99s.iter().copied().fold(0.0, f64::max)
    );
    let _ = writeln!(
        o,
        "- Agents: {} WebSockets opened, {} attempts failed, {} moves to another backend, {} heartbeats echoed; \
         pins checked at the end: {agreed} of {checked} agents pinned to their last backend on every node.",
        world.agent_connects.load(Relaxed),
        world.agent_failed.load(Relaxed),
        world.agent_moves.load(Relaxed),
        world.heartbeats.load(Relaxed)
    );
    let _ = writeln!(
        o,
        "- Admin API (`GET /api/v1/status`, every 2 s per node): median {:.1} ms, worst {:.1} ms.",
        median(admin.clone()),
        admin.iter().copied().fold(0.0, f64::max)
    );
    let _ = writeln!(o, "- Session counts per node at the end: {counts:?}");
    let _ = writeln!(
        o,
        "\n## Faults\n\n| at | fault | target | lasted | what the clients saw (explained) |\n|---|---|---|---|---|"
    );
    for f in &faults {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (at, what) in &explained {
            if *at >= f.start_s && *at <= f.end_s + 5.0 {
                *seen.entry(what.as_str()).or_default() += 1;
            }
        }
        let seen: Vec<String> = seen.iter().map(|(w, n)| format!("{n} × {w}")).collect();
        let seen = if seen.is_empty() { "nothing".to_string() } else { seen.join("; ") };
        let _ = writeln!(
            o,
            "| {:.0} s | {} | {} | {:.0} s | {}. {} |",
            f.start_s,
            f.kind,
            f.target,
            f.end_s - f.start_s,
            f.detail,
            seen
        );
    }
    let _ = writeln!(
        o,
        "\n## Memory and descriptors (from {:.0} s after each start)\n",
        (args.duration.as_secs_f64() / 3.0).min(300.0)
    );
    for g in growth {
        let _ = writeln!(o, "- {g}");
    }
    let _ = writeln!(o, "\n## ERROR lines and panics in the nodes' logs\n");
    if logs.is_empty() {
        let _ = writeln!(o, "None.");
    }
    for (line, n) in logs {
        let _ = writeln!(o, "- {n} × `{line}`");
    }
    if !violations.is_empty() {
        let _ = writeln!(o, "\n## Every violation\n");
        for v in &violations {
            let _ = writeln!(o, "- {:.1} s, {}: {}", v.at_s, v.invariant, v.detail);
        }
    }
    o
}
