//! Sticky sessions through a real node: the same key always reaches the
//! same server, new keys spread by load, a dead server's keys move, records
//! survive a restart and expire with their TTL, JWT claims as keys, the
//! admin sessions API, and the store's failures from the real binary: a
//! corrupt file moved aside, a store that cannot be written, a locked one.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use http::{Method, StatusCode};
use support::process::Spawn;
use support::ws::*;
use support::*;
use sysmanage_node::runtime::Node;
use tokio_tungstenite::tungstenite::Message;

async fn three() -> (WsBackend, WsBackend, WsBackend) {
    (WsBackend::start("s1").await, WsBackend::start("s2").await, WsBackend::start("s3").await)
}

/// A plain HTTP GET carrying an agent token for `hostname`: the backend's name.
async fn http_lands_on(c: &TestClient, node: std::net::SocketAddr, path: &str, hostname: &str) -> String {
    let (status, _, body) = get(c, node, &format!("{path}?token={}", agent_token(hostname))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn server_states(admin: std::net::SocketAddr) -> BTreeMap<String, (String, u32)> {
    let (code, body) = admin_call(admin, Method::GET, "/api/v1/status", None, "").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let s: sysmanage_node::api::Status = serde_json::from_str(&body).unwrap();
    s.pools
        .iter()
        .find(|p| p.name == "agents")
        .unwrap()
        .servers
        .iter()
        .map(|s| (s.name.clone(), (s.state.clone(), s.active_connections)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_hostname_reaches_the_same_server_1000_times_out_of_1000_ws_and_http() {
    let (s1, s2, s3) = three().await;
    let pool = sticky_pool(&[&s1, &s2, &s3], "");
    let (node, _dir) = start_agents_node(&pool).await;
    let addr = node.addr("http").unwrap();
    let started = Instant::now();
    let affinity = |m: &str, result: &str| -> u64 {
        let series = format!("sysmanage_affinity_total{{result=\"{result}\"}} ");
        m.lines().find_map(|l| l.strip_prefix(series.as_str())).unwrap().trim().parse().unwrap()
    };
    let before = get(&client(), node.admin.unwrap(), "/metrics").await.2;

    let home = agent_lands_on(addr, "agent-17").await;
    let mut others = BTreeSet::new();
    for i in 0..1000 {
        // New agents keep arriving and spread over the servers, so agent-17
        // would move if its key were not pinned.
        if i % 25 == 0 {
            others.insert(agent_lands_on(addr, &format!("other-{i}")).await);
        }
        let got = agent_lands_on(addr, "agent-17").await;
        assert_eq!(got, home, "connection {i} of agent-17 (fresh token each time) moved");
    }
    assert_eq!(others.len(), 3, "new agents should spread over every server: {others:?}");
    let ws_time = started.elapsed();

    // Plain HTTP requests with the agent's token follow the same session.
    let c = client();
    for _ in 0..50 {
        assert_eq!(http_lands_on(&c, addr, "/api/agent/installation-packages", "agent-17").await, home);
    }
    // A session an HTTP request started is followed by the WebSocket.
    let first = http_lands_on(&c, addr, "/api/agent/auth", "agent-http-first").await;
    for _ in 0..10 {
        assert_eq!(agent_lands_on(addr, "agent-http-first").await, first);
    }
    assert_eq!(session_server(node.admin.unwrap(), "agent-17").await.as_deref(), Some(home.as_str()));
    // The counters are process-wide (other tests add to them): at least
    // this test's lookups are counted.
    let after = get(&client(), node.admin.unwrap(), "/metrics").await.2;
    // Hits: 1,000 reconnects of agent-17, 50 HTTP requests, 10 WebSockets
    // after the HTTP-made session. Misses: agent-17, 40 others, agent-http-first.
    assert!(affinity(&after, "hit") - affinity(&before, "hit") >= 1060);
    assert!(affinity(&after, "miss") - affinity(&before, "miss") >= 42);
    eprintln!("1,040 agent connections in {ws_time:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn least_loaded_spreads_300_new_hostnames_evenly_and_the_counts_match() {
    let (s1, s2, s3) = three().await;
    let pool = format!(
        "affinity = {{ key = \"query:token\", extract = \"sysmanage-token:hostname\", policy = \"least_loaded\" }}\n{}",
        ws_servers(&[&s1, &s2, &s3], "weight = 1")
    );
    let (node, _dir) = start_agents_node(&pool).await;
    let addr = node.addr("http").unwrap();
    let admin = node.admin.unwrap();

    // Agents connect one after another and stay connected.
    let mut open = Vec::new();
    let mut landed: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..300 {
        let (ws, name) = agent_connect(addr, &format!("host-{i:03}.example.com")).await.unwrap();
        *landed.entry(name).or_default() += 1;
        open.push(ws);
    }
    for b in [&s1, &s2, &s3] {
        let n = landed.get(b.name()).copied().unwrap_or(0);
        assert!((90..=110).contains(&n), "{} got {n} of 300 new agents: {landed:?}", b.name());
        assert_eq!(b.upgrades(), n as u64);
    }
    // The admin API and the metrics count what the clients saw.
    assert_eq!(session_counts(admin).await, landed);
    let metrics = get(&client(), admin, "/metrics").await.2;
    for (server, n) in &landed {
        let line = format!("sysmanage_sessions{{pool=\"agents\",server=\"{server}\"}} {n}");
        assert!(metrics.lines().any(|l| l == line), "missing `{line}` in metrics");
    }
    let states = server_states(admin).await;
    for (server, n) in &landed {
        assert_eq!(states[server].1 as usize, *n, "open tunnels to {server}");
    }
    drop(open);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_loses_its_agents_to_another_through_a_retry() {
    let (s1, s2, s3) = three().await;
    let backends = [&s1, &s2, &s3];
    let pool = sticky_pool(&backends, "retries = 2\nmax_fails = 1\nfail_timeout = \"30s\"");
    let (node, _dir) = start_agents_node(&pool).await;
    let addr = node.addr("http").unwrap();
    let admin = node.admin.unwrap();

    let (mut held, home) = agent_connect(addr, "agent-17").await.unwrap();
    assert_eq!(session_server(admin, "agent-17").await.as_deref(), Some(home.as_str()));
    let victim = backends.iter().find(|b| b.name() == home).unwrap();
    victim.kill();
    // The agent's open tunnel ends with its server.
    let end = tokio::time::timeout(Duration::from_secs(5), held.next()).await.expect("the tunnel ends");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    drop(held);

    // The reconnect is pinned to the dead server: the node's first attempt
    // fails, the retry reaches another server, and the agent gets its 101.
    let (mut ws, moved_to) = agent_connect(addr, "agent-17").await.expect("the reconnect gets a 101");
    assert_ne!(moved_to, home);
    assert_eq!(roundtrip(&mut ws, Message::text("still here")).await, Message::text("still here"));
    drop(ws);
    assert_eq!(session_server(admin, "agent-17").await.as_deref(), Some(moved_to.as_str()));
    assert_eq!(server_states(admin).await[&home].0, "out", "passive health took the dead server out");
    for _ in 0..20 {
        assert_eq!(agent_lands_on(addr, "agent-17").await, moved_to);
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn active_checks_move_a_dead_servers_agents_without_any_retry() {
    let (s1, s2, s3) = three().await;
    let backends = [&s1, &s2, &s3];
    let checks = r#"checks = [{ path = "/api/health", interval = "100ms", timeout = "100ms", fall = 1, rise = 1 }]"#;
    let pool = sticky_pool(&backends, &format!("retries = 0\n{checks}"));
    let (node, _dir) = start_agents_node(&pool).await;
    let addr = node.addr("http").unwrap();
    let admin = node.admin.unwrap();
    let home = agent_lands_on(addr, "agent-17").await;
    let victim = backends.iter().find(|b| b.name() == home).unwrap();
    victim.kill();
    wait_until(Duration::from_secs(5), "checks mark the killed server down", || async {
        server_states(admin).await[&home].0 == "down"
    })
    .await;
    let moved_to = agent_lands_on(addr, "agent-17").await;
    assert_ne!(moved_to, home);
    assert_eq!(session_server(admin, "agent-17").await.as_deref(), Some(moved_to.as_str()));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_keeps_every_hostname_on_its_server() {
    let (s1, s2, s3) = three().await;
    let data = tempfile::tempdir().unwrap();
    let pool = sticky_pool(&[&s1, &s2, &s3], "");
    let cfg = agents_config(data.path(), &pool, "", "");
    let keys: Vec<String> = (0..30).map(|i| format!("agent-{i:02}")).collect();

    let node = start_node(&cfg).await;
    let addr = node.addr("http").unwrap();
    let mut before = BTreeMap::new();
    for k in &keys {
        before.insert(k.clone(), agent_lands_on(addr, k).await);
    }
    node.stop().await;

    let node = start_node(&cfg).await;
    let addr = node.addr("http").unwrap();
    // Loaded from the store before any traffic.
    for (k, server) in &before {
        assert_eq!(session_server(node.admin.unwrap(), k).await.as_ref(), Some(server), "{k} after restart");
    }
    // Reconnecting in the opposite order changes nothing.
    for k in keys.iter().rev() {
        assert_eq!(&agent_lands_on(addr, k).await, &before[k], "{k} moved across the restart");
    }
    node.stop().await;

    // Without the store, that order would have given other servers: the
    // check above could fail.
    let fresh = tempfile::tempdir().unwrap();
    let node = start_node(&agents_config(fresh.path(), &pool, "", "")).await;
    let addr = node.addr("http").unwrap();
    let mut differ = 0;
    for k in keys.iter().rev() {
        differ += usize::from(agent_lands_on(addr, k).await != before[k]);
    }
    assert!(differ > 0, "a node without the store maps the keys the same way");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_expires_after_its_ttl_and_an_open_tunnel_keeps_it_alive() {
    let (s1, s2) = (WsBackend::start("s1").await, WsBackend::start("s2").await);
    let pool = format!(
        "affinity = {{ key = \"query:token\", extract = \"sysmanage-token:hostname\", ttl = \"1s\" }}\n{}",
        ws_servers(&[&s1, &s2], "")
    );
    let (node, _dir) = start_agents_node(&pool).await;
    let addr = node.addr("http").unwrap();
    let admin = node.admin.unwrap();

    // Used once, then idle: the record goes after about 1 s.
    let home = agent_lands_on(addr, "agent-ttl").await;
    let used = Instant::now();
    assert_eq!(session_server(admin, "agent-ttl").await.as_ref(), Some(&home));
    wait_until(Duration::from_secs(5), "the session expired", || async {
        session_server(admin, "agent-ttl").await.is_none()
    })
    .await;
    let lived = used.elapsed();
    assert!(lived >= Duration::from_millis(800), "expired after {lived:?}, before its 1 s TTL");
    // The next connection makes a new record.
    agent_lands_on(addr, "agent-ttl").await;
    assert!(session_server(admin, "agent-ttl").await.is_some());

    // While a tunnel stays open the record is refreshed: it outlives its
    // TTL several times over, then expires after the tunnel closes.
    let (mut ws, _) = agent_connect(addr, "agent-long").await.unwrap();
    let opened = Instant::now();
    while opened.elapsed() < Duration::from_millis(3500) {
        assert!(
            session_server(admin, "agent-long").await.is_some(),
            "the session of an open tunnel expired after {:?}",
            opened.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(roundtrip(&mut ws, Message::text("alive")).await, Message::text("alive"));
    drop(ws);
    wait_until(Duration::from_secs(5), "the session expired after the tunnel closed", || async {
        session_server(admin, "agent-long").await.is_none()
    })
    .await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwt_claims_pin_whatever_else_changes_in_the_token() {
    let (s1, s2, s3) = three().await;
    for (key, header, prefix) in
        [("header:Authorization", "authorization", "Bearer "), ("header:X-Token", "x-token", "")]
    {
        let pool =
            format!("affinity = {{ key = \"{key}\", extract = \"jwt:sub\" }}\n{}", ws_servers(&[&s1, &s2, &s3], ""));
        let (node, _dir) = start_agents_node(&pool).await;
        let addr = node.addr("http").unwrap();
        let connect = |claims: serde_json::Value| {
            let value = format!("{prefix}{}", jwt(claims));
            async move {
                let (mut ws, name) =
                    ws_connect_with(addr, "/api/agent/connect", &[(header, &value)], unlimited()).await.unwrap();
                let _ = ws.close(None).await;
                name
            }
        };
        let home = connect(serde_json::json!({"sub": "agent-j", "iat": 1, "jti": "a"})).await;
        let mut others = BTreeSet::new();
        for i in 0..20 {
            let again =
                connect(serde_json::json!({"sub": "agent-j", "iat": 2 + i, "jti": format!("j{i}"), "exp": 9e9})).await;
            assert_eq!(again, home, "{key}: JWT {i} with the same sub moved");
            others.insert(connect(serde_json::json!({"sub": format!("other-{i}"), "iat": 1})).await);
        }
        assert!(others.len() >= 2, "{key}: other subjects should spread: {others:?}");
        assert_eq!(session_server(node.admin.unwrap(), "agent-j").await.as_ref(), Some(&home), "{key}");
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_sessions_api_counts_unpins_and_moves_behind_the_token() {
    let (s1, s2, s3) = three().await;
    let (node, _dir) = start_agents_node_with_token(&sticky_pool(&[&s1, &s2, &s3], "")).await;
    let addr = node.addr("http").unwrap();
    let admin = node.admin.unwrap();

    let mut landed: BTreeMap<String, usize> = BTreeMap::new();
    let mut home = BTreeMap::new();
    for i in 0..12 {
        let key = format!("host-{i}");
        let server = agent_lands_on(addr, &key).await;
        *landed.entry(server.clone()).or_default() += 1;
        home.insert(key, server);
    }
    assert_eq!(session_counts(admin).await, landed);
    let (code, body) = admin_call(admin, Method::GET, "/api/v1/sessions?key=host-0", None, "").await;
    assert_eq!(code, StatusCode::OK);
    let rec: Vec<sysmanage_node::api::SessionRecordView> = serde_json::from_str(&body).unwrap();
    assert_eq!((rec[0].key.as_str(), rec[0].pool.as_str(), rec[0].origin.as_str()), ("host-0", "agents", "lb-test"));
    assert_eq!(rec[0].server, home["host-0"]);
    assert_eq!(admin_call(admin, Method::GET, "/api/v1/sessions?key=nobody", None, "").await.0, StatusCode::NOT_FOUND);

    // Move: refused without the right token, then the next connection lands there.
    let target = ["s1", "s2", "s3"].into_iter().find(|s| *s != home["host-0"]).unwrap();
    let body = format!("{{\"pool\": \"agents\", \"server\": \"{target}\"}}");
    for token in [None, Some("wrong")] {
        let (code, _) = admin_call(admin, Method::POST, "/api/v1/sessions/host-0/move", token, &body).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "move with token {token:?}");
    }
    assert_eq!(session_server(admin, "host-0").await.as_ref(), Some(&home["host-0"]));
    let (code, text) = admin_call(admin, Method::POST, "/api/v1/sessions/host-0/move", Some(ADMIN_TOKEN), &body).await;
    assert_eq!(code, StatusCode::OK, "{text}");
    assert_eq!(session_server(admin, "host-0").await.as_deref(), Some(target));
    for _ in 0..5 {
        assert_eq!(agent_lands_on(addr, "host-0").await, target);
    }
    let bad = admin_call(
        admin,
        Method::POST,
        "/api/v1/sessions/host-0/move",
        Some(ADMIN_TOKEN),
        r#"{"pool": "agents", "server": "nope"}"#,
    )
    .await;
    assert_eq!(bad.0, StatusCode::NOT_FOUND, "{}", bad.1);

    // Unpin: refused without the token, then the record is gone and the
    // next connection is balanced afresh — to the least loaded server, which
    // the moved-to one is not.
    for token in [None, Some("wrong")] {
        let (code, _) = admin_call(admin, Method::DELETE, "/api/v1/sessions/host-0", token, "").await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "unpin with token {token:?}");
    }
    assert!(session_server(admin, "host-0").await.is_some());
    let (code, text) = admin_call(admin, Method::DELETE, "/api/v1/sessions/host-0", Some(ADMIN_TOKEN), "").await;
    assert_eq!(code, StatusCode::OK, "{text}");
    assert_eq!(session_server(admin, "host-0").await, None);
    assert_eq!(
        admin_call(admin, Method::DELETE, "/api/v1/sessions/host-0", Some(ADMIN_TOKEN), "").await.0,
        StatusCode::NOT_FOUND
    );
    let counts = session_counts(admin).await;
    assert_eq!(counts.values().sum::<usize>(), 11, "{counts:?}");
    wait_until(Duration::from_secs(5), "closed tunnels are no longer counted", || async {
        server_states(admin).await.values().all(|(_, open)| *open == 0)
    })
    .await;
    let least = ["s1", "s2", "s3"].into_iter().min_by_key(|s| counts.get(*s).copied().unwrap_or(0)).unwrap();
    assert_ne!(least, target, "{counts:?}");
    let next = agent_lands_on(addr, "host-0").await;
    assert_eq!(next, least, "after the unpin the key is balanced afresh: {counts:?}");
    assert_eq!(session_server(admin, "host-0").await.as_deref(), Some(least));
    node.stop().await;
}

/// Runs the binary on `config`, which must refuse to start: waits up to 20 s
/// for it to exit (a process still running then is stopped by its PID and
/// the test fails), checks that its exit code is not 0, and returns its
/// stderr.
async fn run_refused(config: &Path) -> String {
    let config = config.to_path_buf();
    let (code, err) = tokio::task::spawn_blocking(move || {
        let mut node = Spawn::run(&config).spawn();
        let status = node.wait_exit(Duration::from_secs(20)).unwrap_or_else(|| {
            panic!("sysmanage-node run did not exit within 20 s; it printed:\n{}", node.lines().join("\n"))
        });
        (status.code(), node.lines().join("\n"))
    })
    .await
    .unwrap();
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {err}");
    err
}

/// `GET /api/health/detailed` of a node: its status code and body.
async fn detailed_health(admin: std::net::SocketAddr) -> (StatusCode, serde_json::Value) {
    let (code, body) = admin_call(admin, Method::GET, "/api/health/detailed", None, "").await;
    (code, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")))
}

/// `sysmanage-node health` against `admin`: its exit code and output.
async fn health_command(admin: std::net::SocketAddr) -> (i32, String) {
    let url = format!("http://{admin}/api/health/detailed");
    let (code, out, err) =
        tokio::task::spawn_blocking(move || support::process::run(&["health", "--url", &url])).await.unwrap();
    (code, format!("{out}{err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_through_a_corrupt_store_and_keeps_the_damaged_file() {
    let s1 = WsBackend::start("s1").await;
    let pool = sticky_pool(&[&s1], "");
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("sessions.redb");
    let garbage = b"garbage, not a redb database\n".repeat(300);
    std::fs::write(&file, &garbage).unwrap();
    let cfg = data.path().join("node.toml");
    std::fs::write(&cfg, agents_config(data.path(), &pool, "", "")).unwrap();
    let node = Spawn::run(&cfg).started().await;
    let (addr, admin) = (node.listener_addr(), node.admin_addr());

    // It serves, with stickiness, on a fresh store.
    assert_eq!(agent_lands_on(addr, "agent-1").await, "s1");
    assert_eq!(session_server(admin, "agent-1").await.as_deref(), Some("s1"));

    // The damaged file is kept beside the new one, byte for byte.
    let kept: Vec<_> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("sessions.redb.corrupt-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), garbage);

    // Logged once, at ERROR, naming both files.
    let logged = node.lines_with("was moved aside");
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("ERROR"), "{}", logged[0]);
    assert!(logged[0].contains(&format!("sessions store {} is corrupt", file.display())), "{}", logged[0]);
    assert!(logged[0].contains(&kept[0].display().to_string()), "{}", logged[0]);

    // Reported degraded (status 200: the node serves) until a restart.
    let (code, health) = detailed_health(admin).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(health["status"], "degraded", "{health}");
    let store = &health["checks"]["session_store"];
    assert_eq!(store["status"], "degraded", "{store}");
    assert_eq!(store["moved_aside"]["to"], kept[0].display().to_string(), "{store}");
    assert!(store["moved_aside"]["reason"].as_str().unwrap().contains("is corrupt"), "{store}");
    assert_eq!(store.get("error"), None, "the new file is written: {store}");
    let (exit, out) = health_command(admin).await;
    assert_eq!(exit, 1, "{out}");
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_written_keeps_sessions_in_memory_and_writes_them_later() {
    let s1 = WsBackend::start("s1").await;
    let s2 = WsBackend::start("s2").await;
    let pool = sticky_pool(&[&s1, &s2], "");
    let dir = tempfile::tempdir().unwrap();
    // A plain file where data_dir's parent should be: even root cannot
    // create the directory, as on a read-only filesystem.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"x").unwrap();
    let data_dir = blocker.join("data");
    let node = start_node(&agents_config(&data_dir, &pool, "", "")).await;
    let (addr, admin) = (node.addr("http").unwrap(), node.admin.unwrap());

    // Traffic flows and sticks, from memory.
    let mut homes = BTreeMap::new();
    for i in 0..20 {
        let host = format!("agent-{i}");
        homes.insert(host.clone(), agent_lands_on(addr, &host).await);
    }
    for (host, home) in &homes {
        assert_eq!(&agent_lands_on(addr, host).await, home, "{host} moved");
    }
    // The state is visible.
    let (code, health) = detailed_health(admin).await;
    assert_eq!(code, StatusCode::OK);
    let store = &health["checks"]["session_store"];
    assert_eq!(store["status"], "degraded", "{store}");
    let error = store["error"].as_str().unwrap();
    assert!(error.starts_with(&format!("cannot create data_dir {}", data_dir.display())), "{error}");
    assert!(store["pending"].as_u64().unwrap() >= 20, "{store}");
    assert_eq!(health_command(admin).await.0, 1);

    // The disk is back: the records are written without any command.
    std::fs::remove_file(&blocker).unwrap();
    wait_until(Duration::from_secs(15), "the store to be healthy again", || async {
        detailed_health(admin).await.1["checks"]["session_store"]["status"] == "healthy"
    })
    .await;
    let (_, health) = detailed_health(admin).await;
    assert_eq!(health["checks"]["session_store"]["pending"], 0, "{health}");
    node.stop().await;
    // A node started on that data_dir finds every pin.
    let node = start_node(&agents_config(&data_dir, &pool, "", "")).await;
    for (host, home) in &homes {
        assert_eq!(session_server(node.admin.unwrap(), host).await.as_ref(), Some(home), "{host}");
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_a_locked_store_with_a_clear_message_printed_once() {
    let s1 = WsBackend::start("s1").await;
    let pool = sticky_pool(&[&s1], "");

    // Locked by an in-process node.
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("sessions.redb");
    let cfg_text = agents_config(data.path(), &pool, "", "");
    let holder: Node = start_node(&cfg_text).await;
    let cfg = data.path().join("node.toml");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let locked = format!(
        "sessions store {} is locked by another process: is another sysmanage-node running with the same data_dir?",
        file.display()
    );
    let err = run_refused(&cfg).await;
    assert_eq!(err.matches(&locked).count(), 1, "{err}");
    holder.stop().await;

    // Released with it: a binary starts on that data_dir, and now holds it
    // against a second binary.
    let first = Spawn::run(&cfg).started().await;
    let err = run_refused(&cfg).await;
    drop(first);
    assert_eq!(err.matches(&locked).count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_pool_puts_every_new_agent_on_the_active_server_and_all_of_them_move_on_failover() {
    let (s1, s2) = (WsBackend::start("s1").await, WsBackend::start("s2").await);
    // What an operator writes who wants agents pinned and one active server:
    // least_loaded would spread new agents over both servers.
    let pool = format!(
        "balance = \"primary\"\nretries = 1\n\
         affinity = {{ key = \"query:token\", extract = \"sysmanage-token:hostname\", \
         policy = \"least_loaded\", on_missing = \"balance\" }}\n\
         checks = [{{ path = \"/api/health\", interval = \"100ms\", timeout = \"100ms\", fall = 1, rise = 1 }}]\n{}",
        ws_servers(&[&s1, &s2], "")
    );
    let (node, _dir) = start_agents_node(&pool).await;
    let addr = node.addr("http").unwrap();
    let admin = node.admin.unwrap();
    let mut open = Vec::new();
    for i in 0..100 {
        let (ws, name) = agent_connect(addr, &format!("host-{i:03}")).await.unwrap();
        assert_eq!(name, "s1", "new agent {i} was not put on the active server");
        open.push(ws);
    }
    assert_eq!((s1.upgrades(), s2.upgrades()), (100, 0));
    assert_eq!(session_counts(admin).await, BTreeMap::from([("s1".to_string(), 100)]));
    // The API goes to the same server.
    assert_eq!(get(&client(), addr, "/api/v1/hosts").await.2, "s1");

    s1.kill();
    for ws in &mut open {
        let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("the tunnel ends");
        assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    }
    drop(open);
    wait_until(Duration::from_secs(5), "checks mark the killed server down", || async {
        server_states(admin).await["s1"].0 == "down"
    })
    .await;
    for i in 0..100 {
        let (_ws, name) = agent_connect(addr, &format!("host-{i:03}")).await.unwrap();
        assert_eq!(name, "s2", "agent {i} did not follow the active server");
    }
    assert_eq!(session_counts(admin).await, BTreeMap::from([("s2".to_string(), 100)]));
    assert_eq!(get(&client(), addr, "/api/v1/hosts").await.2, "s2");
    node.stop().await;
}
