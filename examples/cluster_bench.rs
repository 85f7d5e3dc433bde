//! Client side of the cluster gossip benchmarks (bench/cluster.sh, BENCHMARKS.md
//! "Cluster gossip"). Talks plain HTTP/1.1 to nodes started as separate processes.
//!
//!   cluster_bench backend NAME=ADDR...             tiny backends: any request -> 200 NAME
//!   cluster_bench propagate HTTP ADMINS KEYS PREFIX [POLL_MS]
//!         for each of KEYS new keys: GET / through HTTP (node 1's listener) with
//!         `X-Agent: PREFIX-i`, then poll every other node's admin API
//!         (ADMINS = comma-separated host:port, node 1 excluded)
//!         `/api/v1/sessions?key=..` every POLL_MS (default 5) until all answer 200.
//!         Time is counted from the moment node 1's response arrived (the record
//!         exists on node 1 then). Keys are 20..1020 ms apart (random), so they
//!         start at random phases of the gossip rounds. Prints per-node and
//!         all-nodes p50/p99/max.
//!   cluster_bench fill HTTP N CONC PREFIX          N requests with distinct keys, CONC in flight
//!   cluster_bench rate HTTP RATE SECS PREFIX       open loop: RATE new keys per second for SECS
//!   cluster_bench catchup ADMIN TOTAL START_MS TIMEOUT_S
//!         poll ADMIN's /api/v1/sessions (total) and /api/health/detailed
//!         (checks.cluster.syncing) every 20 ms; print the times, counted from
//!         START_MS (unix ms, taken by the script just before it spawned the node),
//!         when the admin API answered, when total >= TOTAL and when syncing is false.
//!   cluster_bench fail PID SERVER TIMEOUT_S ADMINS
//!         kill -9 PID (a backend), then poll every node's /api/v1/status every
//!         10 ms; print per node the time until SERVER's health is "down".
//!   cluster_bench gossip SECS ADMINS              gossip bytes and datagrams per second per
//!         node from /metrics over SECS
//!
//! Every loop is bounded in count and time.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};

type C = Client<HttpConnector, Full<Bytes>>;

fn client() -> C {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build(conn)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

async fn get(c: &C, addr: &str, path: &str, agent: Option<&str>) -> Result<(u16, String), String> {
    let mut b = Request::get(format!("http://{addr}{path}"));
    if let Some(k) = agent {
        b = b.header("x-agent", k);
    }
    let req = b.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
    let fut = async {
        let resp = c.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), fut).await.map_err(|_| "timeout".to_string())?
}

async fn json(c: &C, addr: &str, path: &str) -> Option<serde_json::Value> {
    match get(c, addr, path, None).await {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // nearest-rank
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn summary(label: &str, v: &mut [f64]) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{label}: n={} p50={:.1} ms p90={:.1} ms p99={:.1} ms max={:.1} ms min={:.1} ms",
        v.len(),
        pct(v, 50.0),
        pct(v, 90.0),
        pct(v, 99.0),
        v.last().copied().unwrap_or(f64::NAN),
        v.first().copied().unwrap_or(f64::NAN)
    );
}

fn list(s: &str) -> Vec<String> {
    s.split(',').filter(|x| !x.is_empty()).map(str::to_string).collect()
}

async fn backend(specs: &[String]) {
    let mut tasks = Vec::new();
    for spec in specs {
        let (name, addr) = spec.split_once('=').expect("NAME=ADDR");
        let name: Arc<str> = Arc::from(name);
        let listener = tokio::net::TcpListener::bind(addr.parse::<SocketAddr>().unwrap()).await.unwrap();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { continue };
                let name = name.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let name = name.clone();
                        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name.to_string())))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(sock), svc).await;
                });
            }
        }));
    }
    println!("READY");
    for t in tasks {
        let _ = t.await;
    }
}

async fn propagate(http: &str, admins: &[String], keys: usize, prefix: &str, poll: Duration) {
    let c = client();
    let mut all = Vec::new();
    let mut per_node: Vec<Vec<f64>> = vec![Vec::new(); admins.len()];
    let mut create = Vec::new();
    let mut missed = 0;
    for i in 0..keys {
        let key = format!("{prefix}-{i}");
        let t_req = Instant::now();
        match get(&c, http, "/", Some(&key)).await {
            Ok((200, _)) => {}
            other => {
                println!("key {key}: request through node 1 failed: {other:?}");
                missed += 1;
                continue;
            }
        }
        let t0 = Instant::now();
        create.push((t0 - t_req).as_secs_f64() * 1e3);
        // Poll every node concurrently, each every `poll`, for at most 10 s.
        let mut set = tokio::task::JoinSet::new();
        for (n, a) in admins.iter().enumerate() {
            let (c, a, path) = (c.clone(), a.clone(), format!("/api/v1/sessions?key={key}"));
            set.spawn(async move {
                let deadline = t0 + Duration::from_secs(10);
                let mut tick = tokio::time::interval(poll);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while Instant::now() < deadline {
                    tick.tick().await;
                    if let Ok((200, _)) = get(&c, &a, &path, None).await {
                        return (n, Some(t0.elapsed().as_secs_f64() * 1e3));
                    }
                }
                (n, None)
            });
        }
        let mut worst: Option<f64> = Some(0.0);
        while let Some(r) = set.join_next().await {
            let (n, t) = r.unwrap();
            match t {
                Some(ms) => {
                    per_node[n].push(ms);
                    worst = worst.map(|w| w.max(ms));
                }
                None => worst = None,
            }
        }
        match worst {
            Some(w) => all.push(w),
            None => {
                println!("key {key}: not known on every node within 10 s");
                missed += 1;
            }
        }
        // A random pause of 20..1020 ms (two gossip intervals at the default
        // 500 ms), so each key is created at a random phase of the gossip
        // rounds. A short fixed pause phase-locks the next key to the round
        // that just delivered this one and measures nearly a full interval
        // every time.
        tokio::time::sleep(Duration::from_millis(20 + fastrand::u64(..1000))).await;
    }
    println!("nodes polled: {}  keys: {keys}  missed (failed or > 10 s): {missed}", admins.len());
    summary("request through node 1 (GET /, new key)", &mut create);
    for (n, v) in per_node.iter_mut().enumerate() {
        summary(&format!("known on {}", admins[n]), v);
    }
    summary("KNOWN ON EVERY NODE", &mut all);
}

async fn fill(http: &str, n: u64, conc: usize, prefix: &str) {
    let c = client();
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..conc {
        let (c, next, errors, http, prefix) =
            (c.clone(), next.clone(), errors.clone(), http.to_string(), prefix.to_string());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                match get(&c, &http, "/", Some(&format!("{prefix}-{i}"))).await {
                    Ok((200, _)) => {}
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    let s = t0.elapsed().as_secs_f64();
    println!(
        "fill: {n} requests with new keys, {conc} in flight: {s:.2} s ({:.0}/s), errors {}",
        n as f64 / s,
        errors.load(Ordering::Relaxed)
    );
}

async fn rate(http: &str, rate: u64, secs: u64, prefix: &str) {
    let c = client();
    let errors = Arc::new(AtomicU64::new(0));
    let total = rate * secs;
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let (c, errors, http, key) = (c.clone(), errors.clone(), http.to_string(), format!("{prefix}-{i}"));
        set.spawn(async move {
            if !matches!(get(&c, &http, "/", Some(&key)).await, Ok((200, _))) {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        });
        while set.try_join_next().is_some() {}
    }
    while set.join_next().await.is_some() {}
    let s = t0.elapsed().as_secs_f64();
    println!(
        "rate: {total} new keys in {s:.2} s ({:.1}/s), errors {}",
        total as f64 / s,
        errors.load(Ordering::Relaxed)
    );
}

async fn catchup(admin: &str, total: u64, start_ms: u64, timeout: Duration) {
    let c = client();
    let since = |_: ()| (unix_ms().saturating_sub(start_ms)) as f64 / 1e3;
    let deadline = Instant::now() + timeout;
    let (mut up, mut full, mut synced): (Option<f64>, Option<f64>, Option<f64>) = (None, None, None);
    let mut last_print = Instant::now() - Duration::from_secs(1);
    let mut last_total = 0;
    while Instant::now() < deadline && (full.is_none() || synced.is_none()) {
        if let Some(v) = json(&c, admin, "/api/v1/sessions").await {
            let t = since(());
            up.get_or_insert(t);
            last_total = v["total"].as_u64().unwrap_or(0);
            if full.is_none() && last_total >= total {
                full = Some(t);
            }
            let asked = since(());
            if let Some(h) = json(&c, admin, "/api/health/detailed").await {
                let syncing = h["checks"]["cluster"]["syncing"].as_bool();
                let answered = since(());
                if answered - asked > 0.1 {
                    println!("  /api/health/detailed took {:.0} ms (asked at t={asked:.2}s)", (answered - asked) * 1e3);
                }
                if synced.is_none() && syncing == Some(false) {
                    synced = Some(answered);
                }
            }
            if last_print.elapsed() >= Duration::from_millis(500) {
                println!("  t={t:.2}s total={last_total}");
                last_print = Instant::now();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let f = |o: Option<f64>| o.map_or("never (timeout)".to_string(), |t| format!("{t:.2} s"));
    println!("catchup: times from the spawn at unix ms {start_ms}");
    println!("catchup: admin API answered at {}", f(up));
    println!("catchup: total >= {total} at {} (last total {last_total})", f(full));
    println!("catchup: syncing=false at {}", f(synced));
    if let Some(st) = json(&c, admin, "/api/v1/status").await {
        println!("catchup: last_sync = {}", st["cluster"]["last_sync"]);
    }
}

async fn fail(pid: &str, server: &str, timeout: Duration, admins: &[String]) {
    let c = client();
    let t0 = Instant::now();
    let ok = std::process::Command::new("kill").args(["-9", pid]).status().map(|s| s.success()).unwrap_or(false);
    println!("fail: kill -9 {pid}: {}", if ok { "ok" } else { "FAILED" });
    let mut set = tokio::task::JoinSet::new();
    for a in admins {
        let (c, a, server) = (c.clone(), a.clone(), server.to_string());
        set.spawn(async move {
            let deadline = t0 + timeout;
            while Instant::now() < deadline {
                if let Some(v) = json(&c, &a, "/api/v1/status").await {
                    let down = v["pools"].as_array().into_iter().flatten().any(|p| {
                        p["servers"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|s| s["name"] == server.as_str() && s["health"] == "down")
                    });
                    if down {
                        return (a, Some(t0.elapsed().as_secs_f64() * 1e3));
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (a, None)
        });
    }
    let mut worst = Some(0.0f64);
    let mut rows = Vec::new();
    while let Some(r) = set.join_next().await {
        let (a, t) = r.unwrap();
        worst = match (worst, t) {
            (Some(w), Some(t)) => Some(w.max(t)),
            _ => None,
        };
        rows.push((a, t));
    }
    rows.sort_by(|x, y| x.0.cmp(&y.0));
    for (a, t) in rows {
        println!(
            "fail: {a} shows {server} down after {}",
            t.map_or("never (timeout)".into(), |t| format!("{t:.0} ms"))
        );
    }
    println!("fail: DOWN ON EVERY NODE after {}", worst.map_or("never (timeout)".into(), |t| format!("{t:.0} ms")));
    // What the nodes say afterwards (nodes_up / nodes_reporting): at once,
    // and 3 s later, when every node's "down" has been gossiped.
    status_of(&c, server, admins, "at once").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    status_of(&c, server, admins, "3 s later").await;
}

async fn status_of(c: &C, server: &str, admins: &[String], when: &str) {
    for a in admins {
        if let Some(v) = json(c, a, "/api/v1/status").await {
            for p in v["pools"].as_array().into_iter().flatten() {
                for s in p["servers"].as_array().into_iter().flatten() {
                    if s["name"] == server {
                        println!(
                            "fail: {when}: {a}: health={} nodes_up={} nodes_reporting={}",
                            s["health"], s["nodes_up"], s["nodes_reporting"]
                        );
                    }
                }
            }
        }
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

async fn scrape(c: &C, admins: &[String]) -> Vec<[f64; 4]> {
    let mut out = Vec::new();
    for a in admins {
        let text = get(c, a, "/metrics", None).await.map(|r| r.1).unwrap_or_default();
        out.push([
            metric(&text, "sysmanage_cluster_gossip_bytes_total{direction=\"sent\"}"),
            metric(&text, "sysmanage_cluster_gossip_bytes_total{direction=\"received\"}"),
            metric(&text, "sysmanage_cluster_datagrams_total{direction=\"sent\"}"),
            metric(&text, "sysmanage_cluster_datagrams_total{direction=\"received\"}"),
        ]);
    }
    out
}

async fn gossip(secs: u64, admins: &[String]) {
    let c = client();
    let before = scrape(&c, admins).await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let after = scrape(&c, admins).await;
    let s = t0.elapsed().as_secs_f64();
    for (i, a) in admins.iter().enumerate() {
        let d: Vec<f64> = (0..4).map(|k| (after[i][k] - before[i][k]) / s).collect();
        println!(
            "gossip: {a}: sent {:.0} B/s received {:.0} B/s; datagrams sent {:.1}/s received {:.1}/s; bytes/datagram sent {:.0}",
            d[0],
            d[1],
            d[2],
            d[3],
            if d[2] > 0.0 { d[0] / d[2] } else { 0.0 }
        );
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let a = |i: usize| {
        args.get(i).map(String::as_str).unwrap_or_else(|| panic!("missing argument {i}; see the file header"))
    };
    match a(1) {
        "backend" => backend(&args[2..]).await,
        "propagate" => {
            let poll = args.get(6).map_or(5, |s| s.parse().unwrap());
            propagate(a(2), &list(a(3)), a(4).parse().unwrap(), a(5), Duration::from_millis(poll)).await
        }
        "fill" => fill(a(2), a(3).parse().unwrap(), a(4).parse().unwrap(), a(5)).await,
        "rate" => rate(a(2), a(3).parse().unwrap(), a(4).parse().unwrap(), a(5)).await,
        "catchup" => {
            catchup(a(2), a(3).parse().unwrap(), a(4).parse().unwrap(), Duration::from_secs(a(5).parse().unwrap()))
                .await
        }
        "fail" => fail(a(2), a(3), Duration::from_secs(a(4).parse().unwrap()), &list(a(5))).await,
        "gossip" => gossip(a(2).parse().unwrap(), &list(a(3))).await,
        m => {
            eprintln!("unknown mode {m:?}; see the header of examples/cluster_bench.rs");
            std::process::exit(2);
        }
    }
}
