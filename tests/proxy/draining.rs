//! A node that drains (`POST /api/v1/node/drain`, `ctl drain-node`): its
//! keep-alive clients are told `Connection: close` (and not after
//! undrain), its `respond` health route answers 503, a WebSocket upgrade is
//! still answered 101 and the tunnel is then shed within the window like
//! the others, HTTP/2 connections get a GOAWAY, and the API and `ctl`
//! refuse what they should with precise messages.

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use http::{Method, StatusCode};
use support::ws::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A node with an admin token, a sticky WebSocket route and a `/health`
/// route the node answers itself.
async fn draining_node(b: &WsBackend) -> (sysmanage_node::runtime::Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let toml = NodeToml::new()
        .node(&format!("name = \"lb-drain\"\ndata_dir = \"{}\"", dir.path().display()))
        .admin(&admin_token_line(dir.path()))
        .listener("http", "")
        .pool("agents", &sticky_pool(&[b], ""))
        .route("agent-ws", "/api/agent/connect", "agents", "websocket = true")
        .tables("[[routes]]\nname = \"health\"\npath = \"/health\"\nrespond = { status = 200, body = \"healthy\\n\" }")
        .route("default", "/", "agents", "")
        .to_string();
    (start_node(&toml).await, dir)
}

async fn drain(admin: SocketAddr, body: &str) -> serde_json::Value {
    let (status, text) = admin_call(admin, Method::POST, "/api/v1/node/drain", Some(ADMIN_TOKEN), body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).unwrap()
}

async fn undrain(admin: SocketAddr) -> serde_json::Value {
    let (status, text) = admin_call(admin, Method::POST, "/api/v1/node/undrain", Some(ADMIN_TOKEN), "").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// One `GET path` on an open keep-alive connection: the response head.
async fn get_on(stream: &mut TcpStream, path: &str) -> String {
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: lb\r\n\r\n").as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text[..end].to_string();
            }
        }
        let n = tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await.expect("an answer within 5 s");
        let n = n.unwrap();
        assert!(n > 0, "closed before the answer: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Whether the node closed `stream` (within 2 s).
async fn closed_by_node(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_clients_are_told_to_close_while_the_node_drains_and_not_after() {
    let b = WsBackend::start("app1").await;
    let (node, _dir) = draining_node(&b).await;
    let (http, admin) = (node.addr("http").unwrap(), node.admin.unwrap());

    // A keep-alive client before the drain: no close.
    let mut before = TcpStream::connect(http).await.unwrap();
    let head = get_on(&mut before, "/health").await;
    assert!(head.starts_with("HTTP/1.1 200") && !head.to_ascii_lowercase().contains("connection: close"), "{head}");

    let state = drain(admin, r#"{"over": "30s"}"#).await;
    assert_eq!((state["draining"].as_bool(), state["over_ms"].as_u64()), (Some(true), Some(30_000)), "{state}");
    assert_eq!(state["was_draining"], false);

    // The same connection's next answer says close, and the node closes it
    // (a proxied answer: the agents pool refuses a request without a
    // session key with 400; what matters here is its `Connection`).
    let head = get_on(&mut before, "/").await;
    assert!(head.starts_with("HTTP/1.1 400") && head.to_ascii_lowercase().contains("connection: close"), "{head}");
    assert!(closed_by_node(&mut before).await, "the connection is closed after the answer");
    // A new connection is served, told to close too; the node's own health
    // route answers 503 (fronts stop sending clients here).
    let mut new = TcpStream::connect(http).await.unwrap();
    let head = get_on(&mut new, "/health").await;
    assert!(head.starts_with("HTTP/1.1 503") && head.to_ascii_lowercase().contains("connection: close"), "{head}");
    assert!(closed_by_node(&mut new).await);
    let (status, _, body) = get(&client(), admin, "/api/health").await;
    assert_eq!((status, body.contains("\"draining\"")), (StatusCode::SERVICE_UNAVAILABLE, true), "{body}");
    let (_, _, status_json) = get(&client(), admin, "/api/v1/status").await;
    let v: serde_json::Value = serde_json::from_str(&status_json).unwrap();
    assert_eq!(v["node"]["drain"]["draining"], true, "{}", v["node"]);

    // Undrain: keep-alive again, health 200.
    let state = undrain(admin).await;
    assert_eq!((state["draining"].as_bool(), state["was_draining"].as_bool()), (Some(false), Some(true)));
    let mut after = TcpStream::connect(http).await.unwrap();
    for _ in 0..3 {
        let head = get_on(&mut after, "/health").await;
        assert!(head.starts_with("HTTP/1.1 200") && !head.to_ascii_lowercase().contains("connection: close"), "{head}");
    }
    let (status, _, _) = get(&client(), admin, "/api/health").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_are_shed_within_the_window_and_an_upgrade_while_draining_gets_101() {
    let b = WsBackend::start("app1").await;
    let (node, _dir) = draining_node(&b).await;
    let (http, admin) = (node.addr("http").unwrap(), node.admin.unwrap());
    let ended = |m: &str| metric(m, "sysmanage_tunnels_ended_total{reason=\"draining\"}").unwrap_or(0.0);
    let shed_before = ended(&scrape(&node).await);
    let mut open = Vec::new();
    for i in 0..20 {
        open.push(agent_connect(http, &format!("host-{i}")).await.unwrap().0);
    }
    let over = Duration::from_secs(2);
    let ordered = Instant::now();
    drain(admin, r#"{"over": "2s"}"#).await;
    // An agent's upgrade on the draining node: 101 as always (never a
    // non-101 to an agent), then shed within what is left of the window.
    let (late, name) = agent_connect(http, "host-late").await.expect("upgrade answered 101 while draining");
    assert_eq!(name, "app1");
    open.push(late);
    let waits = open.into_iter().map(|mut ws| async move {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Err(_) => panic!("a tunnel was still open 10 s after the drain"),
                Ok(Some(Ok(Message::Text(_) | Message::Binary(_) | Message::Ping(_) | Message::Pong(_)))) => {}
                Ok(_) => return ordered.elapsed(),
            }
        }
    });
    let mut took = futures_util::future::join_all(waits).await;
    took.sort();
    eprintln!("21 tunnels shed {:?} .. {:?} after the drain (over {over:?})", took[0], took[20]);
    assert!(took[20] < over + Duration::from_millis(700), "the last tunnel closed at {:?}", took[20]);
    // Spread, not all at once: the first and last are far apart.
    assert!(took[20] - took[0] > over / 3, "closes spread over the window: {took:?}");
    let shed = ended(&scrape(&node).await) - shed_before;
    assert!(shed >= 21.0, "counted as draining: {shed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undrain_keeps_the_tunnels_not_shed_yet() {
    let b = WsBackend::start("app1").await;
    let (node, _dir) = draining_node(&b).await;
    let (http, admin) = (node.addr("http").unwrap(), node.admin.unwrap());
    let mut open = Vec::new();
    for i in 0..10 {
        open.push(agent_connect(http, &format!("host-{i}")).await.unwrap().0);
    }
    drain(admin, r#"{"over": "1h"}"#).await;
    undrain(admin).await;
    // None closes; each still carries messages.
    for ws in &mut open {
        let echo = roundtrip(ws, Message::Text("ping?".into())).await;
        assert!(matches!(echo, Message::Text(_)), "{echo:?}");
    }
    wait_until(Duration::from_secs(5), "10 tunnels open", || async { b.open() == 10 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_refuses_without_token_and_a_bad_over_precisely() {
    let b = WsBackend::start("app1").await;
    let (node, _dir) = draining_node(&b).await;
    let admin = node.admin.unwrap();
    let (status, text) = admin_call(admin, Method::POST, "/api/v1/node/drain", None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    let (status, text) = admin_call(admin, Method::POST, "/api/v1/node/undrain", Some("nope"), "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    for (body, says) in [
        (r#"{"over": "soon"}"#, r#"over: expected a duration such as \"500ms\""#),
        (r#"{"over": "2h"}"#, "over must be at most 1h, got 2h"),
        (r#"{"over": 90}"#, "expected no body or a JSON body such as"),
        (r#"{"ovr": "90s"}"#, "unknown field `ovr`"),
    ] {
        let (status, text) = admin_call(admin, Method::POST, "/api/v1/node/drain", Some(ADMIN_TOKEN), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text}");
    }
    let (_, _, health) = get(&client(), admin, "/api/health").await;
    assert!(health.contains("\"ok\""), "refused drains leave the node serving: {health}");

    // `ctl` says the same, with exit status 1; then drains and undrains.
    let base = format!("http://{admin}");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, ADMIN_TOKEN).unwrap();
    let token = token.display().to_string();
    let ctl = |args: &[&str]| {
        let mut all: Vec<String> = ["ctl", "--admin", &base, "--token-file", &token].map(String::from).to_vec();
        all.extend(args.iter().map(|s| s.to_string()));
        tokio::task::spawn_blocking(move || support::process::run(&all))
    };
    let (code, out, err) = ctl(&["drain-node", "--over", "soon"]).await.unwrap();
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("400") && err.contains("over: expected a duration"), "{err}");
    let (code, out, err) = ctl(&["drain-node", "--over", "45s"]).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("node draining (it was not draining)") && out.contains("45s"), "{out}");
    let (code, out, err) = support::process::run(&["health", "--url", &format!("{base}/api/health/detailed")]);
    assert_eq!(code, 3, "health exits 3 while draining: {out}{err}");
    assert!(out.contains("\"draining\"") && err.contains("draining"), "{out}{err}");
    let (code, out, err) = ctl(&["undrain-node"]).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("node not draining (it was draining)"), "{out}");
}

/// An HTTP/2 connection to `http`: its request sender, and a receiver that
/// resolves when the node ended the connection.
async fn h2_connection(
    http: SocketAddr,
) -> (hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>, tokio::sync::oneshot::Receiver<()>) {
    let tcp = TcpStream::connect(http).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("h2 handshake");
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = conn.await;
        let _ = ended_tx.send(());
    });
    (send, ended)
}

async fn h2_health(send: &mut hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>) -> u16 {
    let req = http::Request::get("http://lb/health").body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
    send.send_request(req).await.expect("an answer").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_get_a_goaway_while_the_node_drains_and_not_after() {
    let b = WsBackend::start("app1").await;
    let (node, _dir) = draining_node(&b).await;
    let (http, admin) = (node.addr("http").unwrap(), node.admin.unwrap());
    let (mut send, mut ended) = h2_connection(http).await;
    assert_eq!(h2_health(&mut send).await, 200);
    drain(admin, "").await;
    // The open connection is ended by the node (GOAWAY, then close).
    tokio::time::timeout(Duration::from_secs(5), &mut ended).await.expect("the node ends the h2 connection").unwrap();
    // A new one is served for a moment (503 from the health route), then
    // ended too.
    let (mut send, ended) = h2_connection(http).await;
    assert_eq!(h2_health(&mut send).await, 503);
    tokio::time::timeout(Duration::from_secs(5), ended).await.expect("the node ends the new h2 connection").unwrap();
    undrain(admin).await;
    let (mut send, mut ended) = h2_connection(http).await;
    assert_eq!(h2_health(&mut send).await, 200);
    assert!(tokio::time::timeout(Duration::from_secs(1), &mut ended).await.is_err(), "kept open after undrain");
    assert_eq!(h2_health(&mut send).await, 200);
}
