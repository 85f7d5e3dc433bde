//! `sysmanage-node demo`: a self-contained showcase on loopback. Three
//! sample backends that answer like SysManage ([`backend`]), three nodes in
//! this process in front of them (each with its admin API), light traffic
//! with agents that hold WebSockets ([`traffic`]), then the dashboard
//! (`top`, [`crate::tui`]) of node 1, or with `--no-tui` (or without a
//! terminal) a summary every few seconds; quitting the dashboard ends the
//! demo. Ctrl-C (or
//! SIGTERM, or `--duration`) stops everything; the files (configs, admin
//! token, session stores) live in a temporary directory removed at exit.
//!
//! Called by `app`. Starts nodes through [`crate::runtime::Node`] like `run`
//! does; touches nothing outside its temporary directory and 127.0.0.1.
//!
//! The three nodes form a cluster (node 1 is the others' seed, the secret
//! is generated into the temporary directory): they share backend health and
//! the agents' sessions, so `least_loaded` places each agent once and every
//! node sends it to the same backend.

pub mod backend;
pub mod traffic;
pub mod ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;

use crate::runtime::Node;
use backend::SampleBackend;
use traffic::Traffic;

/// Nodes and backends started.
pub const NODES: usize = 3;
pub const BACKENDS: usize = 3;
/// Agents holding WebSockets.
pub const AGENTS: usize = 6;
/// Between two summaries with `--no-tui`.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Print summaries instead of starting the dashboard.
    pub no_tui: bool,
    /// Stop after this many seconds.
    pub duration: Option<u64>,
}

/// Runs the demo to the end (signal or `duration`).
pub fn run(opts: DemoOptions) -> anyhow::Result<()> {
    init_tracing();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let dir = TempDir::new()?;
    let result = runtime.block_on(run_in(&dir.path, opts));
    // Ends the tasks that did not stop by themselves (there should be none)
    // before the directory goes.
    runtime.shutdown_timeout(Duration::from_secs(2));
    let path = dir.path.clone();
    drop(dir);
    if result.is_ok() {
        println!("removed {}", path.display());
    }
    result
}

/// Warnings and errors only, unless RUST_LOG says otherwise: the demo's own
/// output is the point.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

async fn run_in(dir: &Path, opts: DemoOptions) -> anyhow::Result<()> {
    let (stop_tx, stop) = watch::channel(false);
    let mut backends = Vec::new();
    for i in 1..=BACKENDS {
        backends.push(SampleBackend::start(&format!("app{i}"), stop.clone()).await?);
    }
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, format!("{}\n", crate::init::random_hex()?))
        .with_context(|| format!("cannot write {}", token_file.display()))?;
    let secret_file = dir.join("cluster.key");
    crate::model::create_private_file(&secret_file, format!("{}\n", crate::init::random_hex()?).as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", secret_file.display()))?;
    let mut nodes: Vec<Node> = Vec::new();
    for i in 1..=NODES {
        // Node 1 is the seed of the others.
        let seeds: Vec<SocketAddr> =
            nodes.first().and_then(|n| n.control.cluster()).map(|c| c.cluster.gossip_addr()).into_iter().collect();
        let text = node_config(i, &backends, dir, &token_file, &secret_file, &seeds);
        let path = dir.join(format!("node{i}.toml"));
        std::fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
        let cfg = crate::config::load_file(&path).map_err(|e| anyhow::anyhow!("demo config invalid:\n{e}"))?;
        nodes.push(Node::start_with_path(cfg, Some(path)).await?);
    }
    let http: Vec<SocketAddr> = nodes.iter().map(|n| n.addr("http").expect("the demo's listener")).collect();
    let admin: Vec<SocketAddr> = nodes.iter().map(|n| n.admin.expect("the demo's admin API")).collect();
    print_banner(dir, &http, &admin, &backends, &token_file);

    let traffic = Traffic::start(http.clone(), AGENTS, stop.clone());
    let admin_url = format!("http://{}", admin[0]);
    let deadline = opts.duration.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));

    let show = async {
        if !opts.no_tui {
            match run_top(&admin_url, &token_file).await {
                Ok(true) => return,
                Ok(false) => println!(
                    "(no terminal for the dashboard: printing a summary every {}s instead)\n",
                    SUMMARY_EVERY.as_secs()
                ),
                Err(e) => println!("(the dashboard stopped: {e:#}; printing summaries instead)\n"),
            }
        }
        summaries(&admin, &backends, &traffic).await
    };
    let why = tokio::select! {
        _ = show => "the dashboard was closed",
        s = shutdown_signal() => s,
        _ = sleep_until(deadline) => "--duration reached",
    };
    println!("\nstopping ({why}) ...");
    let started = Instant::now();
    let _ = stop_tx.send(true);
    traffic.stopped().await;
    futures_util::future::join_all(nodes.into_iter().map(Node::stop)).await;
    for b in backends {
        b.stopped().await;
    }
    println!("stopped in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The dashboard (`top`) on node 1's admin API, until the user quits it:
/// `Ok(true)`. `Ok(false)` when there is no terminal to show it on.
async fn run_top(admin_url: &str, token_file: &Path) -> anyhow::Result<bool> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    // The dashboard runs its own runtime and owns the terminal: give it a
    // thread of its own and wait for it without blocking this runtime.
    let (done, quit) = tokio::sync::oneshot::channel();
    let (url, token) = (admin_url.to_string(), token_file.to_path_buf());
    std::thread::Builder::new()
        .name("top".into())
        .spawn(move || {
            let _ = done.send(crate::tui::run(&url, Some(&token)));
        })
        .context("cannot start the dashboard thread")?;
    match quit.await {
        Ok(code) if code == std::process::ExitCode::SUCCESS => Ok(true),
        Ok(_) => anyhow::bail!("see the message above"),
        Err(_) => anyhow::bail!("the dashboard thread ended without an answer"),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "Ctrl-C",
            _ = term.recv() => "SIGTERM",
        },
        _ => std::future::pending().await,
    }
}

/// The config of node `i` (1-based): one plain-HTTP listener, the admin API
/// with a token, an `api` pool and an `agents` pool with sticky sessions
/// over the same backends, all on 127.0.0.1 with ephemeral ports.
pub fn node_config(
    i: usize,
    backends: &[SampleBackend],
    dir: &Path,
    token_file: &Path,
    secret_file: &Path,
    seeds: &[SocketAddr],
) -> String {
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let servers: Vec<String> =
        backends.iter().map(|b| format!("{{ name = {}, addr = \"{}\" }}", quote(&b.name), b.addr)).collect();
    let servers = servers.join(", ");
    let data_dir = dir.join(format!("node{i}"));
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    // A flat table: one TOML template, one key per line, kept whole so it reads as the file it writes.
    format!(
        r#"# sysmanage-node demo: node {i} of {NODES}
[node]
name = "node{i}"
data_dir = {data_dir}
workers = 1

[admin]
listen = "127.0.0.1:0"
token_file = {token_file}

[limits]
shutdown_timeout = "2s"

[cluster]
listen = "127.0.0.1:0"
seeds = [{seeds}]
secret_file = {secret_file}
gossip_interval = "200ms"

[log]
level = "warn"
access_log = false

[[listeners]]
name = "http"
bind = "127.0.0.1:0"

[[rate_limits]]
name = "agent-auth"
rate = "50/s"
burst = 100

# SysManage's recommended setup: one active server for the API and every
# agent (it reaches an agent only through the process holding its WebSocket);
# both pools are `primary` over the same servers, so they share that server.
[[pools]]
name = "api"
balance = "primary"
retries = 2
servers = [{servers}]
checks = [
  {{ path = "/api/health", interval = "1s", fall = 2, rise = 1 }},
  {{ path = "/api/health/db", interval = "5s", fall = 2, rise = 1 }},
]

[[pools]]
name = "agents"
balance = "primary"
# The default, said here: checks that mark a server down close its tunnels
# (spread over limits.tunnel_close_spread), so its agents reconnect at once.
close_tunnels_on_down = true
servers = [{servers}]
checks = [{{ path = "/api/health", interval = "1s", fall = 2, rise = 1 }}]
# The nodes share their session tables: an agent reaches the same backend
# through any node, and new agents go to the active backend that every node
# agreed on.
affinity = {{ key = "query:token", extract = "sysmanage-token:hostname", policy = "least_loaded", ttl = "10m" }}

[[routes]]
name = "health"
path = "/health"
respond = {{ status = 200, body = "healthy\n" }}

[[routes]]
name = "agents"
path_prefix = "/api/agent/connect"
websocket = true
pool = "agents"

[[routes]]
name = "agent-auth"
path = "/api/agent/auth"
methods = ["POST"]
pool = "api"
rate_limit = "agent-auth"

[[routes]]
name = "default"
path_prefix = "/"
pool = "api"
"#,
        data_dir = quote(&data_dir.display().to_string()),
        token_file = quote(&token_file.display().to_string()),
        secret_file = quote(&secret_file.display().to_string()),
        seeds = seeds.join(", "),
    )
}

fn print_banner(dir: &Path, http: &[SocketAddr], admin: &[SocketAddr], backends: &[SampleBackend], token: &Path) {
    println!("sysmanage-node demo: {NODES} nodes, {BACKENDS} sample backends, {AGENTS} agents on 127.0.0.1");
    println!("files in {} (removed at exit)", dir.display());
    for (i, (h, a)) in http.iter().zip(admin).enumerate() {
        println!("  node{}    http://{h}    admin http://{a}", i + 1);
    }
    for b in backends {
        println!("  {}     http://{}  (sample SysManage server)", b.name, b.addr);
    }
    println!("admin token: {}", token.display());
    println!("try:  curl http://{}/            sysmanage-node ctl --admin http://{} backends", http[0], admin[0]);
    println!("      sysmanage-node ctl --admin http://{} members", admin[0]);
    println!(
        "The nodes form one cluster (node1 is the seed): they share backend health and the agents' \
         sessions,\nso an agent keeps its backend through any node. \
         Ctrl-C (or q in the dashboard) stops everything.\n"
    );
}

/// Every [`SUMMARY_EVERY`]: requests per node (from each node's status
/// API) and per backend, and the agents' WebSockets per node and backend.
async fn summaries(admin: &[SocketAddr], backends: &[SampleBackend], traffic: &Traffic) {
    let clients: Vec<_> = admin
        .iter()
        .map(|a| crate::ctl::AdminClient::new(&format!("http://{a}"), None, Duration::from_secs(2)))
        .collect();
    let started = Instant::now();
    let mut tick = tokio::time::interval(SUMMARY_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let mut per_node = Vec::new();
        let mut live = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            let n = match c.send(http::Method::GET, "/api/v1/members", None).await {
                Ok((s, body)) if s.is_success() => serde_json::from_slice::<crate::api::ClusterStatus>(&body)
                    .map(|m| m.live.to_string())
                    .unwrap_or_else(|_| "?".into()),
                _ => "?".into(),
            };
            live.push(format!("node{}={n}", i + 1));
            let n = match c.send(http::Method::GET, "/api/v1/status", None).await {
                Ok((s, body)) if s.is_success() => serde_json::from_slice::<crate::api::Status>(&body)
                    .map(|st| st.pools.iter().flat_map(|p| &p.servers).map(|s| s.requests_total).sum::<u64>())
                    .map(|n| n.to_string())
                    .unwrap_or_else(|_| "?".into()),
                _ => "?".into(),
            };
            per_node.push(format!("node{}={n}", i + 1));
        }
        let per_backend: Vec<String> =
            backends.iter().map(|b| format!("{}={}", b.name, b.stats.requests.load(Ordering::Relaxed))).collect();
        let tunnels_node: Vec<String> = traffic
            .stats
            .tunnels
            .iter()
            .enumerate()
            .map(|(i, t)| format!("node{}={}", i + 1, t.load(Ordering::Relaxed)))
            .collect();
        let tunnels_backend: Vec<String> =
            backends.iter().map(|b| format!("{}={}", b.name, b.stats.tunnels.load(Ordering::Relaxed))).collect();
        println!(
            "[{:>4}s] requests per node: {} | per backend: {} | tunnels per node: {} | per backend: {} | errors: {} | cluster members live: {}",
            started.elapsed().as_secs(),
            per_node.join(" "),
            per_backend.join(" "),
            tunnels_node.join(" "),
            tunnels_backend.join(" "),
            traffic.stats.errors.load(Ordering::Relaxed),
            live.join(" "),
        );
    }
}

/// A directory under the system's temporary directory, removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        let name = format!("sysmanage-node-demo-{}-{:08x}", std::process::id(), fastrand::u32(..));
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
