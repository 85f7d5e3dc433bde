//! Clusters of real `sysmanage-node` processes on loopback addresses
//! (127.0.0.2 ..), in front of in-process backends: join through one seed,
//! sessions that follow a key through any node, `kill -9` and restart with
//! catch-up, failure propagation, a cluster-agreed primary, a partition that
//! heals (through the test fault file), and a node with another secret.
//!
//! Every process is started with its own temp dir and stopped by its PID
//! when the test ends (also on panic, through `Drop`).

use crate::support;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::process::{run, Process, Spawn, READY};
use support::{free_port, wait_until, write_secret, Backend};

const SECRET: &str = "3f1c9a7be2d54f08a6c1e9b27d3f5a8c0b4e6d2f1a9c8b7e5d3c2b1a0f9e8d7c";
const OTHER_SECRET: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90123456789abcdef0fedcba987654321";

struct Proc {
    name: String,
    ip: IpAddr,
    http: SocketAddr,
    admin: SocketAddr,
    gossip: SocketAddr,
    dir: PathBuf,
    config: PathBuf,
    child: Option<Process>,
}

impl Proc {
    /// Writes the config of node `n` (address 127.0.0.{n+1}).
    fn new(root: &Path, n: u8, pool: &str, secret: &str, seeds: &[SocketAddr]) -> Proc {
        let name = format!("n{n}");
        let ip = IpAddr::from([127, 0, 0, n + 1]);
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let secret_file = dir.join("cluster.key");
        write_secret(&secret_file, secret);
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
name = "default"
path_prefix = "/"
pool = "agents"
"#,
                data = dir.join("data").display(),
                seeds = seeds.join(", "),
                secret = secret_file.display(),
            ),
        )
        .unwrap();
        Proc { name, ip, http, admin, gossip, dir, config, child: None }
    }

    /// `run -c`, or `join PEER -c` when `join` is given.
    async fn start(&mut self, join: Option<SocketAddr>) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("node.log")).unwrap();
        let mut args: Vec<OsString> = match join {
            Some(peer) => vec!["join".into(), peer.to_string().into()],
            None => vec!["run".into()],
        };
        args.extend(["-c".into(), self.config.clone().into()]);
        let faults = self.dir.parent().unwrap().join("faults");
        self.child = Some(Spawn::new(&args).env("SYSMANAGE_NODE_FAULT_FILE", faults).log_to(log).spawn());
        let admin = self.admin;
        let name = self.name.clone();
        wait_until(READY, &format!("{name}'s admin API"), || async move {
            tokio::net::TcpStream::connect(admin).await.is_ok()
        })
        .await;
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    async fn json(&self, path: &str) -> serde_json::Value {
        let (status, _, body) = support::get(&support::client(), self.admin, path).await;
        assert!(status.is_success(), "{} {path}: {status} {body}", self.name);
        serde_json::from_str(&body).unwrap()
    }

    /// Member name → state, as this node sees them.
    async fn members(&self) -> BTreeMap<String, String> {
        let v = self.json("/api/v1/members").await;
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["name"].as_str().unwrap().to_string(), m["state"].as_str().unwrap().to_string()))
            .collect()
    }

    async fn live(&self) -> usize {
        self.members().await.values().filter(|s| *s == "live").count()
    }

    /// The backend that answers `GET /` with affinity key `key`.
    async fn backend_for(&self, key: &str) -> String {
        let req = Request::get(format!("http://{}/", self.http))
            .header("x-agent", key)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, _, body) = support::send(&support::client(), req).await;
        assert_eq!(status, 200, "{} key {key}: {body}", self.name);
        body
    }

    /// The backend that answers a request without a key.
    async fn backend(&self) -> String {
        let (status, _, body) = support::get(&support::client(), self.http, "/").await;
        assert_eq!(status, 200, "{}: {body}", self.name);
        body
    }

    async fn sessions_total(&self) -> u64 {
        self.json("/api/v1/sessions").await["total"].as_u64().unwrap()
    }

    /// The status of `server` in this node's `/api/v1/status`.
    async fn server_status(&self, server: &str) -> serde_json::Value {
        let v = self.json("/api/v1/status").await;
        v["pools"][0]["servers"].as_array().unwrap().iter().find(|s| s["name"] == server).unwrap().clone()
    }
}

fn sticky_pool(backends: &[&Backend]) -> String {
    format!(
        "affinity = {{ key = \"header:X-Agent\" }}\nretries = 1\n{}",
        support::servers(&backends.iter().map(|b| (*b, "")).collect::<Vec<_>>())
    )
}

async fn all_live(nodes: &[&Proc], n: usize) {
    for p in nodes {
        wait_until(Duration::from_secs(20), &format!("{} sees {n} live members", p.name), || async {
            p.live().await == n
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_follow_their_key_through_every_node_across_kill_and_restart() {
    let (b1, b2, b3) = (Backend::start("s1").await, Backend::start("s2").await, Backend::start("s3").await);
    let pool = sticky_pool(&[&b1, &b2, &b3]);
    let root = tempfile::tempdir().unwrap();
    let mut a = Proc::new(root.path(), 1, &pool, SECRET, &[]);
    a.start(None).await;
    // B and C join through A with `join`, which remembers A in their data_dir.
    let mut b = Proc::new(root.path(), 2, &pool, SECRET, &[]);
    let mut c = Proc::new(root.path(), 3, &pool, SECRET, &[]);
    b.start(Some(a.gossip)).await;
    c.start(Some(a.gossip)).await;
    all_live(&[&a, &b, &c], 3).await;
    let seeds = std::fs::read_to_string(c.dir.join("data/cluster-seeds")).unwrap();
    assert!(seeds.contains(&a.gossip.to_string()), "join remembers its peer: {seeds}");

    // `ctl members` lists the three, this node marked.
    let (code, text, err) = run(&["ctl", "--admin", &format!("http://{}", b.admin), "members"]);
    assert_eq!(code, 0, "{text}{err}");
    assert!(text.starts_with("3 live, 0 dead"), "{text}");
    assert!(text.contains("n2 *") && text.contains("n1 ") && text.contains("n3 "), "{text}");

    // 100 keys created through A reach the same backend through B and C.
    let mut owner = BTreeMap::new();
    for i in 0..100 {
        let key = format!("agent-{i}");
        owner.insert(key.clone(), a.backend_for(&key).await);
    }
    let spread: std::collections::BTreeSet<&String> = owner.values().collect();
    assert_eq!(spread.len(), 3, "least_loaded spreads new keys over the servers: {owner:?}");
    for p in [&b, &c] {
        wait_until(Duration::from_secs(10), &format!("{} knows the 100 sessions", p.name), || async {
            p.sessions_total().await >= 100
        })
        .await;
    }
    for (key, server) in &owner {
        assert_eq!(&b.backend_for(key).await, server, "key {key} through B");
        assert_eq!(&c.backend_for(key).await, server, "key {key} through C");
    }

    // kill -9 C: A and B mark it dead and keep routing.
    let c_generation = {
        let v = a.json("/api/v1/members").await;
        v["members"].as_array().unwrap().iter().find(|m| m["name"] == "n3").unwrap()["generation"].as_u64().unwrap()
    };
    c.kill9();
    let killed = std::time::Instant::now();
    for p in [&a, &b] {
        wait_until(Duration::from_secs(15), &format!("{} marks n3 dead", p.name), || async {
            p.members().await.get("n3").is_some_and(|s| s == "dead")
        })
        .await;
    }
    eprintln!("n3 marked dead by n1 and n2 {:?} after kill -9", killed.elapsed());
    for (key, server) in owner.iter().take(10) {
        assert_eq!(&a.backend_for(key).await, server);
    }
    // Keys made while C is down.
    for i in 100..120 {
        let key = format!("agent-{i}");
        owner.insert(key.clone(), b.backend_for(&key).await);
    }

    // C restarts (`run`, seeds from data_dir): a new generation, a catch-up,
    // and every old and new key on its backend.
    c.start(None).await;
    all_live(&[&a, &b, &c], 3).await;
    wait_until(Duration::from_secs(15), "n3 has caught up", || async {
        let h = c.json("/api/health/detailed").await;
        h["checks"]["cluster"]["syncing"] == false && c.sessions_total().await >= 120
    })
    .await;
    let v = a.json("/api/v1/members").await;
    let gen = v["members"].as_array().unwrap().iter().find(|m| m["name"] == "n3" && m["state"] == "live").unwrap()
        ["generation"]
        .as_u64()
        .unwrap();
    assert!(gen > c_generation, "a restart gets a higher generation ({gen} vs {c_generation})");
    let status = c.json("/api/v1/status").await;
    assert!(status["cluster"]["last_sync"]["records"].as_u64().unwrap() >= 120, "{}", status["cluster"]);
    for (key, server) in &owner {
        assert_eq!(&c.backend_for(key).await, server, "key {key} through the restarted C");
    }
    assert!(c.log().contains("session table caught up"), "{}", c.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_store_is_corrupt_starts_and_fetches_the_table_from_a_peer_at_once() {
    let (b1, b2) = (Backend::start("s1").await, Backend::start("s2").await);
    let pool = sticky_pool(&[&b1, &b2]);
    let root = tempfile::tempdir().unwrap();
    // A is the first node: no seeds, so only the damaged store makes it
    // fetch the table when it comes back.
    let mut a = Proc::new(root.path(), 11, &pool, SECRET, &[]);
    a.start(None).await;
    let mut b = Proc::new(root.path(), 12, &pool, SECRET, &[]);
    b.start(Some(a.gossip)).await;
    all_live(&[&a, &b], 2).await;
    let mut owner = BTreeMap::new();
    for i in 0..60 {
        let key = format!("agent-{i}");
        owner.insert(key.clone(), b.backend_for(&key).await);
    }
    wait_until(Duration::from_secs(10), "n11 knows the 60 sessions", || async { a.sessions_total().await >= 60 }).await;

    // kill -9 A, damage its store, start it again with `run`.
    a.kill9();
    std::fs::write(a.dir.join("data/sessions.redb"), b"garbage, not a redb database\n".repeat(300)).unwrap();
    a.start(None).await;
    wait_until(Duration::from_secs(20), "n11 has fetched the table from n12", || async {
        let h = a.json("/api/health/detailed").await;
        h["checks"]["cluster"]["syncing"] == false && a.sessions_total().await >= 60
    })
    .await;
    let log = a.log();
    assert!(log.contains("was moved aside"), "{log}");
    assert!(log.contains("session table caught up"), "{log}");
    // What was lost is known again: the store is no longer degraded.
    let h = a.json("/api/health/detailed").await;
    let store = &h["checks"]["session_store"];
    assert_eq!(store["status"], "healthy", "{h}");
    assert_eq!(store.get("moved_aside"), None, "{h}");
    for (key, server) in &owner {
        assert_eq!(&a.backend_for(key).await, server, "key {key} through the restarted n11");
    }
    let kept = std::fs::read_dir(a.dir.join("data"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("sessions.redb.corrupt-"))
        .count();
    assert_eq!(kept, 1);
}

const FAST_CHECK: &str =
    r#"checks = [{ path = "/api/health", interval = "200ms", timeout = "150ms", fall = 2, rise = 2 }]"#;
const SLOW_CHECK: &str =
    r#"checks = [{ path = "/api/health", interval = "10s", timeout = "150ms", fall = 2, rise = 2 }]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_propagate_and_primary_is_agreed_without_failback() {
    let (b1, b2) = (Backend::start("s1").await, Backend::start("s2").await);
    let servers = support::servers(&[(&b1, ""), (&b2, "")]);
    let root = tempfile::tempdir().unwrap();
    // A checks every 200 ms; B and C only every 10 s, so only a peer's
    // report can make them notice within seconds.
    let mut a = Proc::new(root.path(), 4, &format!("balance = \"primary\"\n{FAST_CHECK}\n{servers}"), SECRET, &[]);
    let slow = format!("balance = \"primary\"\n{SLOW_CHECK}\n{servers}");
    let mut b = Proc::new(root.path(), 5, &slow, SECRET, &[a.gossip]);
    let mut c = Proc::new(root.path(), 6, &slow, SECRET, &[a.gossip]);
    a.start(None).await;
    b.start(None).await;
    c.start(None).await;
    all_live(&[&a, &b, &c], 3).await;
    for p in [&a, &b, &c] {
        wait_until(Duration::from_secs(10), &format!("{} reports 3 nodes seeing s1 up", p.name), || async {
            let s = p.server_status("s1").await;
            s["nodes_up"] == 3 && s["active"] == true
        })
        .await;
        for _ in 0..5 {
            assert_eq!(p.backend().await, "s1", "{} sends to the primary", p.name);
        }
    }

    // s1 fails its checks: A sees it within 2 × 200 ms, B and C at once after
    // A's report (their own interval is 10 s).
    b1.set_health(503);
    let failed = std::time::Instant::now();
    for p in [&b, &c] {
        wait_until(Duration::from_secs(8), &format!("{} marks s1 down", p.name), || async {
            p.server_status("s1").await["health"] == "down"
        })
        .await;
    }
    let took = failed.elapsed();
    eprintln!("s1 down on the slow-checking nodes {took:?} after its checks started failing");
    assert!(took < Duration::from_secs(8), "faster than their own interval × fall (20 s)");
    for p in [&a, &b, &c] {
        wait_until(Duration::from_secs(5), &format!("{} fails over to s2", p.name), || async {
            p.server_status("s2").await["active"] == true
        })
        .await;
        assert_eq!(p.backend().await, "s2", "{} fails over with the others", p.name);
    }

    // s1 returns: no failback, every node stays on s2.
    b1.set_health(200);
    wait_until(Duration::from_secs(10), "A sees s1 up again", || async {
        a.server_status("s1").await["health"] == "up"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for p in [&a, &b, &c] {
        for _ in 0..5 {
            assert_eq!(p.backend().await, "s2", "{} does not fail back", p.name);
        }
        assert_eq!(p.server_status("s2").await["active"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_heals_and_the_tables_converge() {
    let (b1, b2) = (Backend::start("s1").await, Backend::start("s2").await);
    let pool = sticky_pool(&[&b1, &b2]);
    let root = tempfile::tempdir().unwrap();
    let faults = root.path().join("faults");
    let mut a = Proc::new(root.path(), 7, &pool, SECRET, &[]);
    let mut b = Proc::new(root.path(), 8, &pool, SECRET, &[a.gossip]);
    let mut c = Proc::new(root.path(), 9, &pool, SECRET, &[a.gossip]);
    a.start(None).await;
    b.start(None).await;
    c.start(None).await;
    all_live(&[&a, &b, &c], 3).await;

    // Cut C off from A and B.
    std::fs::write(&faults, format!("partition={},{}|{}", a.gossip, b.gossip, c.gossip)).unwrap();
    wait_until(Duration::from_secs(15), "A sees C dead", || async {
        a.members().await.get("n9").is_some_and(|s| s == "dead")
    })
    .await;
    // Both sides take new sessions.
    let mut owner = BTreeMap::new();
    for i in 0..20 {
        let (k1, k2) = (format!("left-{i}"), format!("right-{i}"));
        owner.insert(k1.clone(), a.backend_for(&k1).await);
        owner.insert(k2.clone(), c.backend_for(&k2).await);
    }
    wait_until(Duration::from_secs(10), "B has A's side", || async { b.sessions_total().await >= 20 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.sessions_total().await, 20, "B has A's side only");
    std::fs::write(&faults, "heal").unwrap();
    all_live(&[&a, &b, &c], 3).await;
    for p in [&a, &b, &c] {
        wait_until(Duration::from_secs(20), &format!("{} holds all 40 sessions", p.name), || async {
            p.sessions_total().await == 40
        })
        .await;
    }
    for (key, server) in &owner {
        for p in [&a, &b, &c] {
            assert_eq!(&p.backend_for(key).await, server, "key {key} through {}", p.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_secret_is_refused_and_says_why() {
    let b1 = Backend::start("s1").await;
    let pool = sticky_pool(&[&b1]);
    let root = tempfile::tempdir().unwrap();
    let mut a = Proc::new(root.path(), 10, &pool, SECRET, &[]);
    a.start(None).await;
    let mut intruder = Proc::new(root.path(), 11, &pool, OTHER_SECRET, &[]);
    intruder.start(Some(a.gossip)).await;
    // A drops every datagram and counts it; neither side lists the other.
    wait_until(Duration::from_secs(10), "A counts authentication failures", || async {
        let v = a.json("/api/v1/members").await;
        v["auth_failures"].as_u64().unwrap() > 0
    })
    .await;
    assert_eq!(a.live().await, 1);
    assert_eq!(intruder.live().await, 1);
    let metrics = support::get(&support::client(), a.admin, "/metrics").await.2;
    let dropped = support::metric(&metrics, "sysmanage_cluster_datagrams_dropped_total{reason=\"unknown_key\"}");
    assert!(dropped.is_some_and(|n| n > 0.0), "{metrics}");
    // The intruder's catch-up is refused too (401), and both logs say why.
    wait_until(Duration::from_secs(25), "the intruder logs why nobody answers", || async {
        intruder.log().contains("same cluster secret")
    })
    .await;
    assert!(a.log().contains("secret"), "A's log names the cause: {}", a.log());
    let (status, _, body) = support::send(
        &support::client(),
        Request::get(format!("http://{}/cluster/v1/sessions", a.gossip))
            .header("authorization", "Bearer 00")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("cluster secret"), "{body}");
    let _ = (a.ip, intruder.ip);
}

/// The active server of every `primary` pool in this node's status.
async fn active_by_pool(p: &Proc) -> BTreeMap<String, String> {
    let v = p.json("/api/v1/status").await;
    v["pools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|pool| {
            let s = pool["servers"].as_array()?.iter().find(|s| s["active"] == true)?;
            Some((pool["name"].as_str()?.to_string(), s["name"].as_str()?.to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_api_pools_name_the_same_active_server_on_every_node_through_a_failover_and_a_restart() {
    let (b1, b2) = (Backend::start("s1").await, Backend::start("s2").await);
    let servers = support::servers(&[(&b1, ""), (&b2, "")]);
    // SysManage's setup: the agents pool (here the default route) and an
    // API pool over the same servers. Only A's agents pool checks often;
    // every API pool checks every 10 s.
    let api = format!(
        "\n[[pools]]\nname = \"api\"\nbalance = \"primary\"\n{SLOW_CHECK}\n{servers}\n\n\
         [[routes]]\nname = \"api\"\npath_prefix = \"/api/\"\npool = \"api\"\n"
    );
    let root = tempfile::tempdir().unwrap();
    let mut a =
        Proc::new(root.path(), 7, &format!("balance = \"primary\"\n{FAST_CHECK}\n{servers}\n{api}"), SECRET, &[]);
    let slow = format!("balance = \"primary\"\n{SLOW_CHECK}\n{servers}\n{api}");
    let mut b = Proc::new(root.path(), 8, &slow, SECRET, &[a.gossip]);
    let mut c = Proc::new(root.path(), 9, &slow, SECRET, &[a.gossip]);
    a.start(None).await;
    b.start(None).await;
    c.start(None).await;
    all_live(&[&a, &b, &c], 3).await;
    let both = |s: &str| BTreeMap::from([("agents".to_string(), s.to_string()), ("api".to_string(), s.to_string())]);
    for p in [&a, &b, &c] {
        wait_until(Duration::from_secs(10), &format!("{} names s1 for both pools", p.name), || async {
            active_by_pool(p).await == both("s1")
        })
        .await;
    }

    b1.set_health(503);
    wait_until(Duration::from_secs(8), "A's agents pool fails over", || async {
        active_by_pool(&a).await.get("agents").map(String::as_str) == Some("s2")
    })
    .await;
    assert_eq!(active_by_pool(&a).await, both("s2"), "A's API pool follows at once, not 10 s later");
    for p in [&b, &c] {
        wait_until(Duration::from_secs(5), &format!("{} fails over both pools", p.name), || async {
            active_by_pool(p).await == both("s2")
        })
        .await;
    }

    // s1 recovers (no failback), and C restarts: it adopts s2 for both pools.
    b1.set_health(200);
    // C comes back while B is down, so that it hears A only: A's one vote
    // for s2 must win over the s1 that C, alone, would pick (a tie of one
    // against one kept C's own choice before).
    b.kill9();
    c.kill9();
    wait_until(Duration::from_secs(15), "A marks n8 dead", || async {
        a.members().await.get("n8").is_some_and(|s| s == "dead")
    })
    .await;
    c.start(None).await;
    // Its very first answers come from s2: it accepts no connection before
    // it knows the cluster's choice (alone, it would have chosen s1).
    let http = c.http;
    let first: Vec<_> = (0..10)
        .map(|_| {
            tokio::spawn(async move {
                let client = support::client();
                let agents = support::get(&client, http, "/").await;
                let api = support::get(&client, http, "/api/v1/hosts").await;
                (agents.0.as_u16(), agents.2, api.0.as_u16(), api.2)
            })
        })
        .collect();
    for f in first {
        assert_eq!(f.await.unwrap(), (200, "s2".to_string(), 200, "s2".to_string()), "C's first requests");
    }
    assert!(c.log().contains("the cluster's state is known: accepting connections peers=1"), "{}", c.log());
    b.start(None).await;
    all_live(&[&a, &b, &c], 3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for p in [&a, &b, &c] {
        wait_until(Duration::from_secs(10), &format!("{} names s2 for both pools", p.name), || async {
            active_by_pool(p).await == both("s2")
        })
        .await;
        assert_eq!(p.backend().await, "s2", "{}: agents", p.name);
        let (status, _, body) = support::get(&support::client(), p.http, "/api/v1/hosts").await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "s2"), "{}: API", p.name);
    }
}

/// A process started by an in-place upgrade (not a child of the test),
/// stopped by its PID when dropped.
struct Adopted(u32);

impl Drop for Adopted {
    fn drop(&mut self) {
        let pid = self.0.to_string();
        let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::process::Command::new("kill").args(["-KILL", &pid]).status();
    }
}

/// (generation, state) of each member called `name` as `p` sees them.
async fn generations(p: &Proc, name: &str) -> Vec<(u64, String)> {
    let v = p.json("/api/v1/members").await;
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == name)
        .map(|m| (m["generation"].as_u64().unwrap(), m["state"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_upgraded_in_place_rejoins_as_a_new_generation_and_is_never_reported_dead() {
    let (b1, b2) = (Backend::start("s1").await, Backend::start("s2").await);
    let pool = sticky_pool(&[&b1, &b2]);
    let root = tempfile::tempdir().unwrap();
    let mut n1 = Proc::new(root.path(), 1, &pool, SECRET, &[]);
    let mut n2 = Proc::new(root.path(), 2, &pool, SECRET, &[n1.gossip]);
    n1.start(None).await;
    n2.start(None).await;
    all_live(&[&n1, &n2], 2).await;
    let mut pins = BTreeMap::new();
    for i in 0..20 {
        let key = format!("agent-{i}");
        pins.insert(key.clone(), n1.backend_for(&key).await);
    }
    let before = generations(&n2, "n1").await;
    assert_eq!(before.len(), 1, "{before:?}");

    let config = n1.config.clone();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || run(&["upgrade".as_ref(), "-c".as_ref(), config.as_os_str()]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{out}\n{err}\n{}", n1.log());
    let new_pid: u32 = std::fs::read_to_string(n1.dir.join("data/running.pid")).unwrap().trim().parse().unwrap();
    let _adopted = Adopted(new_pid);

    // For the next 5 s (50 gossip rounds), n2 lists n1 once, never dead,
    // and soon under a newer generation.
    let mut seen_new = false;
    for _ in 0..50 {
        let now = generations(&n2, "n1").await;
        assert!(now.iter().all(|(_, s)| s != "dead"), "n2 reports n1 dead after the upgrade: {now:?}");
        assert!(now.len() <= 2, "{now:?}");
        if now.len() == 1 && now[0].0 > before[0].0 && now[0].1 == "live" {
            seen_new = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen_new, "n2 never listed n1's new generation alone: {:?}", generations(&n2, "n1").await);
    assert_eq!(n1.live().await, 2, "the new process sees both members live");

    // The pins hold through both nodes.
    for (key, backend) in &pins {
        assert_eq!(&n1.backend_for(key).await, backend, "{key} through the upgraded node");
        assert_eq!(&n2.backend_for(key).await, backend, "{key} through the peer");
    }
    // The old process had no tunnel: it has exited.
    let mut old = n1.child.take().unwrap();
    let status = tokio::task::spawn_blocking(move || old.wait_exit(Duration::from_secs(15))).await.unwrap();
    assert!(status.is_some_and(|s| s.success()), "the old process exits: {status:?}\n{}", n1.log());
    n2.kill9();
}
