//! The rolling upgrade of issue #22, with real processes: three nodes in
//! one cluster (127.0.0.2 ..) in front of three SysManage-like WebSocket
//! servers, with sticky sessions on the agents' hostnames (the setup the
//! book recommends), and 300 agents that each hold a tunnel through some
//! node. A front, played by the test, polls every node's `/api/health` and
//! sends reconnecting agents only to nodes that answer 200.
//!
//! `ctl drain-node --over 3s` on node 1: every tunnel through it closes
//! within the window (plus a margin), each of its agents reconnects through
//! node 2 or 3 and reaches the same server as before, and no agent ever gets
//! an answer other than 101. `ctl undrain-node`; then the same for node 2.
//! The timings are printed (the book's "Upgrading a cluster" quotes them).

use crate::support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::process::{run, Process, Spawn, READY};
use support::ws::{agent_connect, sticky_pool, WsBackend};
use support::{free_port, wait_until, write_secret};

const SECRET: &str = "9a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f30211203f4e5d6c7b8a9";
const TOKEN: &str = "rolling-upgrade-token";
const AGENTS: usize = 300;
const OVER: Duration = Duration::from_secs(3);
/// After the window: a tunnel's close reaches its agent, plus scheduling
/// on a loaded debug build.
const MARGIN: Duration = Duration::from_millis(1500);

struct NodeProc {
    name: String,
    http: SocketAddr,
    admin: SocketAddr,
    gossip: SocketAddr,
    dir: PathBuf,
    /// Stopped by its PID when dropped.
    _child: Process,
}

impl NodeProc {
    /// Node `n` (1..=3) at 127.0.0.{n+1}, seeded with `seeds`.
    fn start(root: &Path, n: u8, pool: &str, seeds: &[SocketAddr]) -> NodeProc {
        let name = format!("n{n}");
        let ip = IpAddr::from([127, 0, 0, n + 1]);
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        write_secret(&dir.join("cluster.key"), SECRET);
        std::fs::write(dir.join("admin.token"), TOKEN).unwrap();
        let (http, admin, gossip) = (
            SocketAddr::new(ip, free_port(ip)),
            SocketAddr::new(ip, free_port(ip)),
            SocketAddr::new(ip, free_port(ip)),
        );
        let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
        let config = dir.join("node.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[node]
name = "{name}"
data_dir = "{data}"
workers = 1

[log]
level = "info"
access_log = false

[admin]
listen = "{admin}"
token_file = "{token}"

[cluster]
listen = "{gossip}"
seeds = [{seeds}]
secret_file = "{secret}"
gossip_interval = "100ms"

[[listeners]]
name = "http"
bind = "{http}"

[[pools]]
name = "agents"
{pool}

[[routes]]
name = "agent-ws"
path_prefix = "/api/agent/connect"
websocket = true
pool = "agents"

[[routes]]
name = "default"
path_prefix = "/"
pool = "agents"
"#,
                data = dir.join("data").display(),
                token = dir.join("admin.token").display(),
                secret = dir.join("cluster.key").display(),
                seeds = seeds.join(", "),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("node.log")).unwrap();
        let child = Spawn::new(&["run".as_ref(), "-c".as_ref(), config.as_os_str()]).log_to(log).spawn();
        NodeProc { name, http, admin, gossip, dir, _child: child }
    }

    async fn json(&self, path: &str) -> serde_json::Value {
        let (status, _, body) = support::get(&support::client(), self.admin, path).await;
        assert!(status.is_success(), "{} {path}: {status} {body}", self.name);
        serde_json::from_str(&body).unwrap()
    }

    /// Member name → (state, draining), as this node sees them.
    async fn members(&self) -> BTreeMap<String, (String, bool)> {
        let v = self.json("/api/v1/members").await;
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let state = m["state"].as_str().unwrap().to_string();
                (m["name"].as_str().unwrap().to_string(), (state, !m["draining_since_unix_ms"].is_null()))
            })
            .collect()
    }

    async fn tunnels(&self) -> u64 {
        self.json("/api/v1/status").await["totals"]["websocket_tunnels"].as_u64().unwrap()
    }

    /// `ctl ACTION...` against this node, with its token.
    async fn ctl(&self, action: &[&str]) -> String {
        let mut args: Vec<String> = vec!["ctl".into(), "--admin".into(), format!("http://{}", self.admin)];
        args.extend(["--token-file".into(), self.dir.join("admin.token").display().to_string()]);
        args.extend(action.iter().map(|s| s.to_string()));
        let (code, out, err) = tokio::task::spawn_blocking(move || run(&args)).await.unwrap();
        assert_eq!(code, 0, "ctl {action:?} on {}: {out}{err}", self.name);
        out
    }
}

/// What one agent went through.
#[derive(Default)]
struct AgentLog {
    /// The server of its first tunnel.
    first_server: String,
    /// The node (index) of its tunnel now, if it has one.
    node: Option<usize>,
    /// Every tunnel it got: node, server.
    tunnels: Vec<(usize, String)>,
    /// When each tunnel was seen closed, and through which node.
    closed: Vec<(Instant, usize)>,
    /// When each tunnel after the first was open (greeting received).
    reopened: Vec<Instant>,
}

/// The agents and the front, shared by the agents' tasks.
struct Fleet {
    nodes: Vec<SocketAddr>,
    /// The front's view: bit i set when node i answered its health check 200.
    healthy: AtomicU8,
    logs: Vec<Mutex<AgentLog>>,
    /// Answers other than 101 to an upgrade (must stay 0).
    non_101: AtomicU64,
    /// Refused, reset or silent attempts (an agent retries those).
    transient: AtomicU64,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Fleet {
    /// The node an agent's attempt goes to: among those the front finds
    /// healthy, spread by agent and attempt.
    fn pick(&self, agent: usize, attempt: usize) -> usize {
        let healthy = self.healthy.load(Ordering::SeqCst);
        let up: Vec<usize> = (0..self.nodes.len()).filter(|i| healthy & (1 << i) != 0).collect();
        if up.is_empty() {
            return (agent + attempt) % self.nodes.len();
        }
        up[(agent + attempt) % up.len()]
    }
}

/// One agent: holds a tunnel, and when it closes reconnects through a node
/// the front sends it to, until the test stops.
async fn agent(fleet: Arc<Fleet>, i: usize) {
    let host = format!("agent-{i:03}.example");
    let mut stop = fleet.stop.subscribe();
    let mut attempt = 0;
    // The first tunnels are spread over the nodes by index.
    let mut node = i % fleet.nodes.len();
    while !*stop.borrow() {
        match agent_connect(fleet.nodes[node], &host).await {
            Ok((mut ws, server)) => {
                {
                    let mut log = fleet.logs[i].lock().unwrap();
                    if log.tunnels.is_empty() {
                        log.first_server = server.clone();
                    } else {
                        log.reopened.push(Instant::now());
                    }
                    log.tunnels.push((node, server));
                    log.node = Some(node);
                }
                let ended = loop {
                    tokio::select! {
                        m = ws.next() => match m {
                            Some(Ok(m)) if !m.is_close() => continue,
                            _ => break true,
                        },
                        _ = stop.wait_for(|s| *s) => break false,
                    }
                };
                if !ended {
                    let _ = ws.close(None).await;
                    let _ = ws.flush().await;
                    return;
                }
                let mut log = fleet.logs[i].lock().unwrap();
                log.closed.push((Instant::now(), node));
                log.node = None;
            }
            Err(e) if e.contains("HTTP error") || e.starts_with("status") => {
                fleet.non_101.fetch_add(1, Ordering::SeqCst);
                eprintln!("{host}: non-101 answer through n{}: {e}", node + 1);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => {
                fleet.transient.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        attempt += 1;
        node = fleet.pick(i, attempt);
    }
}

/// The front: every node's `/api/health` every 100 ms.
async fn front(fleet: Arc<Fleet>, admins: Vec<SocketAddr>) {
    let c = support::client();
    let mut stop = fleet.stop.subscribe();
    while !*stop.borrow() {
        let mut mask = 0u8;
        for (i, a) in admins.iter().enumerate() {
            let healthy = tokio::time::timeout(Duration::from_secs(1), support::get(&c, *a, "/api/health")).await;
            if matches!(healthy, Ok((s, _, _)) if s == 200) {
                mask |= 1 << i;
            }
        }
        fleet.healthy.store(mask, Ordering::SeqCst);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Agents with a tunnel through node `n` now.
fn on_node(fleet: &Fleet, n: usize) -> Vec<usize> {
    (0..AGENTS).filter(|i| fleet.logs[*i].lock().unwrap().node == Some(n)).collect()
}

/// Drains node `d`, checks that its agents move within the window to the
/// other nodes and to the same server, undrains it. Returns how long the
/// last of its tunnels took to close, and the longest reconnect.
async fn drain_and_check(fleet: &Arc<Fleet>, nodes: &[NodeProc], d: usize) -> (Duration, Duration) {
    let moving = on_node(fleet, d);
    assert!(moving.len() >= AGENTS / 5, "n{} holds {} tunnels before its drain", d + 1, moving.len());
    let started = Instant::now();
    let out = nodes[d].ctl(&["drain-node", "--over", "3s"]).await;
    assert!(out.contains("node draining") && out.contains("3s"), "{out}");
    // Every node shows it draining (gossip), `ctl members` too.
    for p in nodes {
        let name = nodes[d].name.clone();
        wait_until(Duration::from_secs(5), &format!("{} sees {name} draining", p.name), || async {
            p.members().await.get(&name).is_some_and(|(state, draining)| state == "live" && *draining)
        })
        .await;
    }
    let members = nodes[(d + 1) % 3].ctl(&["members"]).await;
    assert!(members.lines().any(|l| l.starts_with(&nodes[d].name) && l.contains(" draining ")), "{members}");

    // Within the window (and the margin) no tunnel is left on the node.
    let deadline = OVER + MARGIN;
    let node = &nodes[d];
    wait_until(deadline.saturating_sub(started.elapsed()), &format!("{} without tunnels", node.name), || async {
        node.tunnels().await == 0
    })
    .await;
    let emptied = started.elapsed();
    // Every agent that was on it is back, through another node.
    wait_until(Duration::from_secs(10), "the moved agents all reconnected", || async {
        moving.iter().all(|i| fleet.logs[*i].lock().unwrap().node.is_some_and(|n| n != d))
    })
    .await;
    let mut last_close = Duration::ZERO;
    let mut longest_gap = Duration::ZERO;
    for i in &moving {
        let log = fleet.logs[*i].lock().unwrap();
        let (n, server) = log.tunnels.last().unwrap();
        assert_ne!(*n, d, "agent {i} is back through another node");
        assert_eq!(server, &log.first_server, "agent {i} reaches the same server: {:?}", log.tunnels);
        // Every tunnel it had kept its server (also one that landed on the
        // draining node before the front noticed).
        assert!(log.tunnels.iter().all(|(_, s)| s == &log.first_server), "agent {i}: {:?}", log.tunnels);
        let closes: Vec<Duration> =
            log.closed.iter().filter(|(at, n)| *n == d && *at >= started).map(|(at, _)| *at - started).collect();
        assert!(!closes.is_empty(), "agent {i}: its tunnel through the drained node was closed");
        last_close = last_close.max(*closes.iter().max().unwrap());
        for (closed, _) in log.closed.iter().filter(|(at, _)| *at >= started) {
            if let Some(back) = log.reopened.iter().find(|r| *r >= closed) {
                longest_gap = longest_gap.max(*back - *closed);
            }
        }
    }
    assert!(last_close <= deadline, "the last tunnel closed {last_close:?} after the drain (window {OVER:?})");
    eprintln!(
        "n{}: {} tunnels shed; node empty {emptied:?} after drain-node, last close seen by its agent at \
         {last_close:?} (over {OVER:?}); longest close-to-reopen of an agent {longest_gap:?}",
        d + 1,
        moving.len()
    );
    let out = nodes[d].ctl(&["undrain-node"]).await;
    assert!(out.contains("node not draining (it was draining)"), "{out}");
    for p in nodes {
        let name = nodes[d].name.clone();
        wait_until(Duration::from_secs(5), &format!("{} sees {name} serving", p.name), || async {
            p.members().await.get(&name).is_some_and(|(state, draining)| state == "live" && !*draining)
        })
        .await;
    }
    wait_until(Duration::from_secs(5), "the front sends to the undrained node", || async {
        fleet.healthy.load(Ordering::SeqCst) & (1 << d) != 0
    })
    .await;
    (last_close, longest_gap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_upgrade_moves_every_agent_to_the_same_server_through_the_other_nodes() {
    let t0 = Instant::now();
    let servers = [WsBackend::start("app1").await, WsBackend::start("app2").await, WsBackend::start("app3").await];
    let pool = sticky_pool(&[&servers[0], &servers[1], &servers[2]], "");
    let root = tempfile::tempdir().unwrap();
    let n1 = NodeProc::start(root.path(), 1, &pool, &[]);
    let n2 = NodeProc::start(root.path(), 2, &pool, &[n1.gossip]);
    let n3 = NodeProc::start(root.path(), 3, &pool, &[n1.gossip]);
    let nodes = vec![n1, n2, n3];
    for p in &nodes {
        wait_until(READY, &format!("{} sees 3 live members", p.name), || async {
            tokio::net::TcpStream::connect(p.admin).await.is_ok()
                && p.members().await.values().filter(|(s, _)| s == "live").count() == 3
        })
        .await;
    }
    let (stop, _) = tokio::sync::watch::channel(false);
    let fleet = Arc::new(Fleet {
        nodes: nodes.iter().map(|p| p.http).collect(),
        healthy: AtomicU8::new(0b111),
        logs: (0..AGENTS).map(|_| Mutex::new(AgentLog::default())).collect(),
        non_101: AtomicU64::new(0),
        transient: AtomicU64::new(0),
        stop,
    });
    let mut tasks = vec![tokio::spawn(front(fleet.clone(), nodes.iter().map(|p| p.admin).collect()))];
    for i in 0..AGENTS {
        tasks.push(tokio::spawn(agent(fleet.clone(), i)));
    }
    wait_until(Duration::from_secs(30), "300 agents hold a tunnel", || async {
        (0..AGENTS).all(|i| fleet.logs[i].lock().unwrap().node.is_some())
    })
    .await;
    let per_server: BTreeMap<String, usize> = (0..AGENTS).fold(BTreeMap::new(), |mut m, i| {
        *m.entry(fleet.logs[i].lock().unwrap().first_server.clone()).or_default() += 1;
        m
    });
    assert_eq!(per_server.len(), 3, "the agents are spread over the three servers: {per_server:?}");
    // Every node knows every agent's session before a drain.
    for p in &nodes {
        wait_until(Duration::from_secs(10), &format!("{} knows the {AGENTS} sessions", p.name), || async {
            p.json("/api/v1/sessions").await["total"].as_u64().unwrap_or(0) >= AGENTS as u64
        })
        .await;
    }
    let ready = t0.elapsed();

    let first = drain_and_check(&fleet, &nodes, 0).await;
    let second = drain_and_check(&fleet, &nodes, 1).await;

    assert_eq!(fleet.non_101.load(Ordering::SeqCst), 0, "no agent got an answer other than 101");
    eprintln!(
        "rolling upgrade: {AGENTS} agents over 3 nodes and 3 servers ({per_server:?}), ready in {ready:?}; \
         n1 last close {:?}, longest reconnect {:?}; n2 last close {:?}, longest reconnect {:?}; \
         transient connection failures {}; whole test {:?}",
        first.0,
        first.1,
        second.0,
        second.1,
        fleet.transient.load(Ordering::SeqCst),
        t0.elapsed()
    );
    fleet.stop.send_replace(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    drop(nodes);
}
