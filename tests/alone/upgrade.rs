//! In-place upgrades of the real binary (`sysmanage-node upgrade`, SIGUSR2)
//! under load: REST requests at a steady rate and 1,000 agents' WebSocket
//! tunnels through one node while it hands its sockets, session store and
//! cluster place to a new process.
//!
//! What is asserted, as issue #22 asks: no failed request and no refused
//! connection during the switch; new connections are served by the new
//! process (told by which process owns the node's side of the socket, read
//! from /proc) within a second of its readiness; every old tunnel still
//! echoes until the drain deadline and is closed by the old process after
//! it, spread; every pin is still answered by the new process; the old
//! process is gone after the deadline. A new process that rejects its
//! config leaves the old one serving with nothing dropped.
//!
//! Runs alone: 1,000 tunnels are 4,000 sockets between this process and
//! the node's two.

use crate::{support, ALONE};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::Method;
use support::process::{run, Process, Spawn};
use support::ws::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const TUNNELS: usize = 1_000;
const CONCURRENCY: usize = 100;
/// The old process keeps its tunnels this long after the new one is ready,
/// then closes them over `SHED_OVER`.
const KEEP: Duration = Duration::from_secs(6);
const SHED_OVER: Duration = Duration::from_secs(3);

/// A process started by an upgrade is not a child of the test: it is
/// stopped by its PID (SIGTERM, then SIGKILL) when this is dropped.
struct Adopted(u32);

impl Drop for Adopted {
    fn drop(&mut self) {
        let alive = || std::path::Path::new(&format!("/proc/{}", self.0)).exists();
        let _ = std::process::Command::new("kill").args(["-TERM", &self.0.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive() {
            let _ = std::process::Command::new("kill").args(["-KILL", &self.0.to_string()]).status();
        }
    }
}

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by the test's Child) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

/// The process (of `pids`) that owns the node's side of `client`.
fn owner(client: &TcpStream, pids: &[u32]) -> Option<u32> {
    let (local, peer) = (client.local_addr().ok()?, client.peer_addr().ok()?);
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!("{:08X}:{:04X}", u32::from_le_bytes(v4.ip().octets()), v4.port()),
        SocketAddr::V6(_) => String::new(),
    };
    let (node_side, client_side) = (hex(peer), hex(local));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1] == node_side && f[2] == client_side).then(|| f[9].to_string())
    })?;
    let link = format!("socket:[{inode}]");
    pids.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|dir| {
            dir.flatten().any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy() == link))
        })
    })
}

/// Counts of the REST load.
#[derive(Default)]
struct Load {
    ok: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

impl Load {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut e = self.errors.lock().unwrap();
        if e.len() < 10 {
            e.push(what);
        }
    }
}

/// A REST request of an agent (the pool pins by the token's hostname).
fn rest_path() -> String {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| format!("/api/v1/ping?token={}", agent_token("rest-client"))).clone()
}

/// One request on a new connection, as a script or a health check sends it.
async fn one_request(node: SocketAddr, load: &Load) {
    let mut s = match TcpStream::connect(node).await {
        Ok(s) => s,
        Err(e) => {
            load.refused.fetch_add(1, Ordering::Relaxed);
            load.fail(format!("connect: {e}"));
            return;
        }
    };
    let req = format!("GET {} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n", rest_path());
    if let Err(e) = s.write_all(req.as_bytes()).await {
        return load.fail(format!("write: {e}"));
    }
    let mut buf = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await {
        Ok(Ok(_)) if buf.starts_with(b"HTTP/1.1 200") => {
            load.ok.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Ok(_)) => load.fail(format!("answer: {:?}", String::from_utf8_lossy(&buf[..buf.len().min(80)]))),
        Ok(Err(e)) => load.fail(format!("read: {e}")),
        Err(_) => load.fail("no answer within 10 s".into()),
    }
}

/// REST load until `stop`: `workers` loops of one request per connection
/// every `every`, and as many keep-alive clients (hyper's pool, which
/// retries a request only when the connection closed before it was sent).
fn start_load(
    node: SocketAddr,
    load: Arc<Load>,
    stop: Arc<AtomicU64>,
    workers: usize,
    every: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (l, s) = (load.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while s.load(Ordering::Relaxed) == 0 {
                one_request(node, &l).await;
                tokio::time::sleep(every).await;
            }
        }));
        let (load, stop) = (load.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            while stop.load(Ordering::Relaxed) == 0 {
                let (status, _, _) = match tokio::time::timeout(Duration::from_secs(10), try_get(&c, node)).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        load.fail(format!("keep-alive: {e}"));
                        tokio::time::sleep(every).await;
                        continue;
                    }
                    Err(_) => {
                        load.fail("keep-alive: no answer within 10 s".into());
                        continue;
                    }
                };
                if status == http::StatusCode::OK {
                    load.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    load.fail(format!("keep-alive: {status}"));
                }
                tokio::time::sleep(every).await;
            }
        }));
    }
    tasks
}

async fn try_get(c: &TestClient, node: SocketAddr) -> Result<(http::StatusCode, (), ()), String> {
    let req = http::Request::get(format!("http://{node}{}", rest_path()))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = c.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    http_body_util::BodyExt::collect(resp.into_body()).await.map_err(|e| e.to_string())?;
    Ok((status, (), ()))
}

/// A field of server `name` in the node's `/api/v1/status`, as text.
async fn server_field(admin: SocketAddr, name: &str, field: &str) -> String {
    let (_, body) = admin_call(admin, Method::GET, "/api/v1/status", None, "").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let server = v["pools"][0]["servers"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap().clone();
    match &server[field] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn upgrade_config(dir: &std::path::Path, pool: &str, token_line: &str) -> String {
    format!(
        "{}\n[limits]\nupgrade_drain_timeout = \"{}s\"\nshed_over = \"{}s\"\n",
        agents_config(dir, pool, "", token_line),
        KEEP.as_secs(),
        SHED_OVER.as_secs()
    )
}

/// The upgrade's outcome line from `sysmanage-node upgrade`, run off the
/// async runtime: (exit code, stdout, stderr).
async fn upgrade_command(cfg: &std::path::Path) -> (i32, String, String) {
    let cfg = cfg.to_path_buf();
    tokio::task::spawn_blocking(move || run(&["upgrade".as_ref(), "-c".as_ref(), cfg.as_os_str()])).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_under_load_refuses_nothing_and_keeps_tunnels_and_sessions() {
    let _alone = ALONE.lock().await;
    tokio::time::timeout(Duration::from_secs(120), under_load()).await.expect("the whole test within 120 s");
}

async fn under_load() {
    let backends = [
        WsBackend::start_with("s1", small()).await,
        WsBackend::start_with("s2", small()).await,
        WsBackend::start_with("s3", small()).await,
    ];
    let dir = tempfile::tempdir().unwrap();
    let token_line = admin_token_line(dir.path());
    let cfg_path = dir.path().join("node.toml");
    let pool = sticky_pool(&[&backends[0], &backends[1], &backends[2]], "");
    std::fs::write(&cfg_path, upgrade_config(dir.path(), &pool, &token_line)).unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut old = Spawn::run(&cfg_path).env("NOTIFY_SOCKET", &notify_path).started().await;
    let old_pid = old.pid();
    let (http, admin) = (old.listener_addr(), old.admin_addr());
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 from the node");
    assert_eq!(&buf[..n], b"READY=1");

    // 1,000 agents, each pinned to its backend.
    let mut tunnels: Vec<(usize, Ws, String)> = futures_util::stream::iter(0..TUNNELS)
        .map(|i| async move {
            let target = format!("/api/agent/connect?token={}", agent_token(&format!("agent-{i:04}")));
            let (ws, backend) =
                ws_connect_with(http, &target, &[], small()).await.unwrap_or_else(|e| panic!("agent {i}: {e}"));
            (i, ws, backend)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    assert_eq!(tunnels.len(), TUNNELS);

    // Steady REST load: 4 + 4 clients, one request every 20 ms each.
    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicU64::new(0));
    let tasks = start_load(http, load.clone(), stop.clone(), 4, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pins_before = session_counts(admin).await;
    assert_eq!(pins_before.values().sum::<usize>(), TUNNELS + 1, "the agents' and the REST client's");

    let asked = Instant::now();
    let (code, out, err) = upgrade_command(&cfg_path).await;
    let upgrade_took = asked.elapsed();
    assert_eq!(code, 0, "upgrade failed:\n{out}\n{err}");
    let new_pid: u32 = out
        .split("upgraded: process ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no new PID in {out:?}"));
    let _adopted = Adopted(new_pid);
    assert_ne!(new_pid, old_pid);
    let ready_at = Instant::now();
    // systemd is told the new main process.
    let n = notify.recv(&mut buf).expect("MAINPID from the old node");
    let said = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(said.starts_with(&format!("MAINPID={new_pid}\n")), "{said:?}");

    // Within a second of readiness, every new connection is the new process's.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut owners = Vec::new();
    for _ in 0..20 {
        let s = TcpStream::connect(http).await.expect("connect after the upgrade");
        let mut s = s;
        s.write_all(format!("GET {} HTTP/1.1\r\nHost: lb\r\n\r\n", rest_path()).as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        owners.push(owner(&s, &[old_pid, new_pid]));
    }
    assert!(
        owners.iter().all(|o| *o == Some(new_pid)),
        "owners of new connections (old {old_pid}, new {new_pid}): {owners:?}"
    );
    let pid_file = sysmanage_node::upgrade::read_pid(&sysmanage_node::upgrade::pid_file(dir.path())).unwrap();
    assert_eq!(pid_file, new_pid, "the PID file names the new process");

    // The old process still carries every old tunnel, which still echoes.
    assert!(alive(old_pid), "the old process keeps its tunnels");
    let echoed = futures_util::stream::iter(tunnels.iter_mut())
        .map(|(i, ws, _)| async move {
            let text = format!("still here {i}");
            ws.send(Message::text(text.clone())).await.unwrap_or_else(|e| panic!("tunnel {i}: {e}"));
            match next_data(ws).await {
                Message::Text(t) if t.as_str() == text => 1usize,
                other => panic!("tunnel {i} answered {other:?}"),
            }
        })
        .buffer_unordered(CONCURRENCY * 2)
        .fold(0, |n, one| async move { n + one })
        .await;
    assert_eq!(echoed, TUNNELS, "every old tunnel echoes after the switch");
    assert!(ready_at.elapsed() < KEEP, "the echo check ran before the drain deadline");

    // Every pin is answered by the new process (its admin API now).
    let pins_after = session_counts(admin).await;
    assert_eq!(pins_after, pins_before, "the session table passed whole");
    for (i, _, backend) in tunnels.iter().step_by(10) {
        let key = format!("agent-{i:04}");
        assert_eq!(session_server(admin, &key).await.as_deref(), Some(backend.as_str()), "pin of {key}");
    }

    // After the deadline the old process closes the tunnels, spread over
    // SHED_OVER, and exits.
    let mut closes: Vec<Duration> = futures_util::stream::iter(tunnels.iter_mut())
        .map(|(i, ws, _)| async move {
            loop {
                match tokio::time::timeout(KEEP + SHED_OVER + Duration::from_secs(10), ws.next()).await {
                    Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return ready_at.elapsed(),
                    Ok(Some(Ok(_))) => continue,
                    Err(_) => panic!("tunnel {i} not closed by the old process"),
                }
            }
        })
        .buffer_unordered(TUNNELS)
        .collect()
        .await;
    closes.sort();
    let (first, last) = (closes[0], closes[TUNNELS - 1]);
    assert!(first >= KEEP - Duration::from_millis(1500), "a tunnel closed before the drain deadline: {first:?}");
    assert!(last <= KEEP + SHED_OVER + Duration::from_secs(2), "the last tunnel closed at {last:?}");
    assert!(last - first >= SHED_OVER / 2, "tunnels closed within {:?}, not spread over {SHED_OVER:?}", last - first);
    let exited = tokio::task::spawn_blocking(move || {
        let status = old.wait_exit(Duration::from_secs(15));
        (status, old)
    })
    .await
    .unwrap();
    let (status, old) = exited;
    assert!(status.is_some_and(|s| s.success()), "the old process exits cleanly after the deadline: {status:?}");

    stop.store(1, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let (ok, refused, failed) =
        (load.ok.load(Ordering::Relaxed), load.refused.load(Ordering::Relaxed), load.failed.load(Ordering::Relaxed));
    eprintln!(
        "upgrade took {upgrade_took:?}; REST {ok} ok, {refused} refused, {failed} failed; tunnels closed from {first:?} to {last:?} after readiness"
    );
    assert_eq!((refused, failed), (0, 0), "REST failures during the upgrade: {:?}", load.errors.lock().unwrap());
    assert!(ok > 500, "the load ran ({ok} requests)");

    // Agents reconnect through the new process to the same backends.
    for (i, _, backend) in tunnels.iter().step_by(25) {
        assert_eq!(&agent_lands_on(http, &format!("agent-{i:04}")).await, backend, "agent {i} after the upgrade");
    }
    let logged = old.lines_with("upgrade");
    assert!(logged.iter().any(|l| l.contains("upgrade: the new process serves; this one retires")), "{logged:#?}");
    drop(old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_that_rejects_its_config_leaves_the_old_one_serving() {
    let _alone = ALONE.lock().await;
    tokio::time::timeout(Duration::from_secs(60), broken_config()).await.expect("within 60 s");
}

async fn broken_config() {
    let backend = WsBackend::start_with("s1", small()).await;
    let (s2, s3) = (WsBackend::start_with("s2", small()).await, WsBackend::start_with("s3", small()).await);
    let dir = tempfile::tempdir().unwrap();
    let token_line = admin_token_line(dir.path());
    let cfg_path = dir.path().join("node.toml");
    let checks = r#"checks = [{ path = "/api/health", interval = "200ms", fall = 1, rise = 3 }]"#;
    let good = upgrade_config(dir.path(), &sticky_pool(&[&backend, &s2, &s3], checks), &token_line);
    std::fs::write(&cfg_path, &good).unwrap();
    let node: Process = Spawn::run(&cfg_path).started().await;
    let (http, admin) = (node.listener_addr(), node.admin_addr());
    // What the operator and the checks set: s2 in maintenance, s1's weight
    // changed, s3 down (its checks fail).
    let actions = [
        (Method::POST, "/api/v1/pools/agents/servers/s2/maintenance", ""),
        (Method::PUT, "/api/v1/pools/agents/servers/s1/weight", r#"{"weight": 7}"#),
    ];
    for (method, path, body) in actions {
        let (code, answer) = admin_call(admin, method, path, Some(ADMIN_TOKEN), body).await;
        assert!(code.is_success(), "{path}: {code} {answer}");
    }
    s3.set_health(503);
    wait_until(Duration::from_secs(10), "s3 down", || async { server_field(admin, "s3", "health").await == "down" })
        .await;
    let (mut ws, _) = agent_connect(http, "agent-1").await.unwrap();
    let c = client();
    assert_eq!(get(&c, http, &rest_path()).await.0, http::StatusCode::OK);

    // The command checks the config before it touches the node.
    std::fs::write(&cfg_path, good.replace("[limits]", "[limits]\nmax_connections = \"lots\"")).unwrap();
    let (code, _, err) = upgrade_command(&cfg_path).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("max_connections") && err.contains("the running node was not touched"), "{err}");

    // SIGUSR2 sent directly (as `systemctl kill -s USR2` would): the new
    // process reports its error and exits; the old one keeps serving.
    let before = Instant::now();
    node.signal("-USR2");
    node.wait_line("the failed upgrade", Duration::from_secs(20), |l| l.contains("upgrade failed"));
    let status = sysmanage_node::upgrade::read_status(dir.path()).expect("a status file");
    assert_eq!(status.state, "failed");
    assert!(status.message.contains("max_connections"), "{status:?}");
    let new_pid = status.new_pid.expect("the new process's PID");
    assert!(!alive(new_pid), "the new process exited");
    eprintln!("failed upgrade reported in {:?}", before.elapsed());

    // Nothing dropped: the tunnel echoes, keep-alive and new requests work,
    // the pin is there, and the node still owns its store and sockets.
    assert_eq!(roundtrip(&mut ws, Message::text("still")).await, Message::text("still"));
    assert_eq!(get(&c, http, &rest_path()).await.0, http::StatusCode::OK);
    assert_eq!(session_server(admin, "agent-1").await.as_deref(), Some("s1"));
    assert_eq!(agent_lands_on(http, "agent-2").await, "s1", "new agents are pinned (the store was not released)");
    let (code, body) = admin_call(admin, Method::GET, "/api/health/detailed", None, "").await;
    assert_eq!(code, http::StatusCode::OK, "{body}");
    assert!(!body.contains("\"error\":\""), "the store has no error: {body}");

    // A good config now upgrades.
    std::fs::write(&cfg_path, &good).unwrap();
    let (code, out, err) = upgrade_command(&cfg_path).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let new_pid = sysmanage_node::upgrade::read_pid(&sysmanage_node::upgrade::pid_file(dir.path())).unwrap();
    let _adopted = Adopted(new_pid);
    assert_eq!(session_server(admin, "agent-2").await.as_deref(), Some("s1"), "a pin made after the failed try passed");
    // The new process (it answers the admin API now) kept the servers'
    // states: s2 in maintenance, s1's weight, s3 down (its checks need 3
    // passes to bring it up, and it still fails them).
    assert_eq!(server_field(admin, "s2", "admin").await, "maintenance");
    assert_eq!(server_field(admin, "s1", "weight").await, "7");
    assert_eq!(server_field(admin, "s3", "health").await, "down");
    assert_eq!(agent_lands_on(http, "agent-3").await, "s1", "no new agent goes to s2 or s3");
    drop(ws);
    drop(node);
}
