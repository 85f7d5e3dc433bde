//! WebSocket tunnels through a real node with a real client
//! (tokio-tungstenite): messages of every kind and size both ways, close
//! codes, `on_missing` for requests without a usable session key, and what
//! an agent's Upgrade gets when no server can take it.

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use support::ws::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A raw WebSocket Upgrade request for `target`.
fn upgrade_request(target: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: lb.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Writes `request`, then reads one response head and its Content-Length
/// body. Returns (status line, body), or `None` if the node closed the
/// connection (read returned 0) without sending a single byte. Panics if nothing happens
/// within 5 s.
async fn exchange(node: SocketAddr, request: &str) -> Option<(String, String)> {
    let mut stream = tokio::net::TcpStream::connect(node).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Duration::from_secs(5);
    loop {
        let n = match tokio::time::timeout(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            // The node closes cleanly (FIN): a reset would be a change.
            Ok(Err(e)) => panic!("read failed instead of a clean close: {e}"),
            Err(_) => panic!("no answer and no close within {deadline:?}; got {:?}", String::from_utf8_lossy(&got)),
        };
        if n == 0 {
            if got.is_empty() {
                return None;
            }
            panic!("closed in the middle of a response: {:?}", String::from_utf8_lossy(&got));
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        let Some(end) = text.find("\r\n\r\n") else { continue };
        let head = &text[..end];
        let len = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0usize);
        if got.len() >= end + 4 + len {
            let status = head.lines().next().unwrap().to_string();
            return Some((status, text[end + 4..end + 4 + len].to_string()));
        }
    }
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in metrics"))
}

async fn metrics(node: &sysmanage_node::runtime::Node) -> String {
    get(&client(), node.admin.unwrap(), "/metrics").await.2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn text_binary_pings_and_close_codes_pass_through_both_ways() {
    let b = WsBackend::start("s1").await;
    let (node, _dir) = start_agents_node(&ws_servers(&[&b], "")).await;
    let addr = node.addr("http").unwrap();

    let token = agent_token("agent-1");
    let target = format!("/api/agent/connect?token={token}");
    let (mut ws, name) = ws_connect_with(addr, &target, &[], unlimited()).await.unwrap();
    assert_eq!(name, "s1");
    assert_eq!(b.last_target(), target, "the server sees the agent's request line as sent");
    let seen = b.last_headers();
    assert_eq!(seen["upgrade"], "websocket");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");

    // Text (multi-byte UTF-8), binary with every byte value, an empty message.
    assert_eq!(roundtrip(&mut ws, Message::text("héllo ☃ agent")).await, Message::text("héllo ☃ agent"));
    let bin: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    assert_eq!(roundtrip(&mut ws, Message::binary(bin.clone())).await, Message::binary(bin));
    assert_eq!(roundtrip(&mut ws, Message::text("")).await, Message::text(""));

    // Client ping → server's pong with the same payload.
    ws.send(Message::Ping(Bytes::from_static(b"are you there"))).await.unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("pong within 5 s");
    assert_eq!(pong.unwrap().unwrap(), Message::Pong(Bytes::from_static(b"are you there")));

    // Server ping → the client's pong reaches the server.
    ws.send(Message::text("ping srv-ping-1")).await.unwrap();
    let ping = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(ping, Message::Ping(Bytes::from_static(b"srv-ping-1")));
    ws.flush().await.unwrap(); // sends the queued pong
    wait_until(Duration::from_secs(5), "the server got the pong", || async {
        b.pongs().contains(&Bytes::from_static(b"srv-ping-1"))
    })
    .await;

    // Client closes with 4001 "bye": the server gets exactly that.
    ws.close(Some(CloseFrame { code: CloseCode::from(4001), reason: "bye".into() })).await.unwrap();
    let reply = next_data(&mut ws).await;
    assert!(matches!(&reply, Message::Close(Some(f)) if u16::from(f.code) == 4001), "{reply:?}");
    wait_until(Duration::from_secs(5), "the server got close 4001", || async {
        b.closes().contains(&(4001, "bye".to_string()))
    })
    .await;
    wait_until(Duration::from_secs(5), "the server side is closed", || async { b.open() == 0 }).await;
    drop(ws);

    // Server closes with 4002 "server bye": the client gets exactly that.
    let (mut ws, _) = agent_connect(addr, "agent-1").await.unwrap();
    ws.send(Message::text("close 4002 server bye")).await.unwrap();
    match next_data(&mut ws).await {
        Message::Close(Some(f)) => {
            assert_eq!(u16::from(f.code), 4002);
            assert_eq!(f.reason.as_str(), "server bye");
        }
        other => panic!("expected close 4002, got {other:?}"),
    }
    // After the close handshake the stream ends.
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("stream ends");
    assert!(end.is_none() || matches!(end, Some(Err(_))), "{end:?}");
    drop(ws);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_100_mb_binary_message_crosses_both_ways_intact() {
    const SIZE: usize = 100 * 1000 * 1000;
    let b = WsBackend::start("s1").await;
    let (node, _dir) = start_agents_node(&ws_servers(&[&b], "")).await;
    let addr = node.addr("http").unwrap();
    let before = metrics(&node).await;

    let mut payload = vec![0u8; SIZE];
    fastrand::Rng::with_seed(17).fill(&mut payload);
    let payload = Bytes::from(payload);
    let (mut ws, _) = agent_connect(addr, "agent-big").await.unwrap();
    let started = Instant::now();
    let echoed = roundtrip(&mut ws, Message::Binary(payload.clone())).await;
    let took = started.elapsed();
    match echoed {
        Message::Binary(got) => {
            assert_eq!(got.len(), SIZE);
            assert!(got == payload, "the echoed 100 MB differ from what was sent");
        }
        other => panic!("expected the binary echo, got {:?}", std::mem::discriminant(&other)),
    }
    // The tunnel still works after it.
    assert_eq!(roundtrip(&mut ws, Message::text("after")).await, Message::text("after"));

    let after = metrics(&node).await;
    for dir in ["up", "down"] {
        let series = format!("sysmanage_tunnel_bytes_total{{direction=\"{dir}\"}}");
        let delta = metric(&after, &series) - metric(&before, &series);
        assert!(delta >= SIZE as u64, "{series} grew by {delta}, less than the 100 MB that passed");
    }
    eprintln!("100 MB each way in {took:?}");
    // An open tunnel would hold the node's stop for its drain deadline.
    drop(ws);
    node.stop().await;
}

/// Requests with no usable key, and the reason each is refused.
fn keyless_targets() -> Vec<(String, &'static str)> {
    vec![
        ("/api/agent/connect".into(), "no token"),
        ("/api/agent/connect?token=".into(), "empty token"),
        ("/api/agent/connect?other=1".into(), "another parameter only"),
        ("/api/agent/connect?token=not*base64!".into(), "bad base64"),
        (format!("/api/agent/connect?token={}", b64("this is not json")), "bad JSON"),
        (
            format!("/api/agent/connect?token={}", b64(r#"{"payload":{"connection_id":"c1"},"signature":"s"}"#)),
            "no hostname",
        ),
        (
            format!("/api/agent/connect?token={}", b64(r#"{"payload":{"hostname":17},"signature":"s"}"#)),
            "hostname not a string",
        ),
        (format!("/api/agent/connect?token={}", b64(r#"{"hostname":"agent-1"}"#)), "no payload"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_missing_reject_answers_400_missing_session_id_and_balance_lets_it_through() {
    let b = WsBackend::start("s1").await;
    let reject = format!(
        "affinity = {{ key = \"query:token\", extract = \"sysmanage-token:hostname\", on_missing = \"reject\" }}\n{}",
        ws_servers(&[&b], "")
    );
    let (node, _dir) = start_agents_node(&reject).await;
    let addr = node.addr("http").unwrap();
    for (target, why) in keyless_targets() {
        // As an Upgrade: a 400 even on a websocket route (the client is at
        // fault, not the servers), never a close.
        let got = exchange(addr, &upgrade_request(&target)).await;
        assert_eq!(got, Some(("HTTP/1.1 400 Bad Request".into(), "Missing session ID\n".into())), "upgrade, {why}");
        // As a plain request.
        let plain =
            format!("GET {} HTTP/1.1\r\nHost: lb.example\r\n\r\n", target.replace("/api/agent/connect", "/api/x"));
        let got = exchange(addr, &plain).await;
        assert_eq!(got, Some(("HTTP/1.1 400 Bad Request".into(), "Missing session ID\n".into())), "plain, {why}");
    }
    assert_eq!(b.upgrades() + b.http_hits(), 0, "a refused request reached the server");
    // A real token passes.
    assert_eq!(agent_connect(addr, "agent-1").await.unwrap().1, "s1");
    node.stop().await;
    let balance = reject.replace("\"reject\"", "\"balance\"");
    let (node, _dir) = start_agents_node(&balance).await;
    let addr = node.addr("http").unwrap();
    for (target, why) in keyless_targets() {
        let (mut ws, name) =
            ws_connect_with(addr, &target, &[], unlimited()).await.unwrap_or_else(|e| panic!("{why}: {e}"));
        assert_eq!(name, "s1", "{why}");
        assert_eq!(roundtrip(&mut ws, Message::text(why)).await, Message::text(why));
        let plain =
            format!("GET {} HTTP/1.1\r\nHost: lb.example\r\n\r\n", target.replace("/api/agent/connect", "/api/x"));
        assert_eq!(exchange(addr, &plain).await, Some(("HTTP/1.1 200 OK".into(), "s1".into())), "plain, {why}");
    }
    // Nothing was pinned for them.
    let counts = session_counts(node.admin.unwrap()).await;
    assert_eq!(counts.values().sum::<usize>(), 0, "{counts:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_no_server_can_take_is_closed_without_a_response_or_503_when_configured() {
    let (s1, s2) = (WsBackend::start("s1").await, WsBackend::start("s2").await);
    let pool = sticky_pool(&[&s1, &s2], "retries = 0");
    s1.kill();
    s2.kill();
    let (node, _dir) = start_agents_node(&pool).await;
    let addr = node.addr("http").unwrap();
    // 1st: the pinned server refuses the connection (a connect failure);
    // 2nd: it is out after max_fails = 1, then the other one fails too;
    // later: no server is left at all. Every time: a close, no bytes.
    for attempt in 0..4 {
        let target = format!("/api/agent/connect?token={}", agent_token("agent-17"));
        let got = exchange(addr, &upgrade_request(&target)).await;
        assert_eq!(got, None, "attempt {attempt}: the agent got an HTTP answer to its Upgrade");
    }
    // A plain request still gets a status.
    let plain = format!("GET /api/x?token={} HTTP/1.1\r\nHost: t\r\n\r\n", agent_token("agent-17"));
    let (status, _) = exchange(addr, &plain).await.expect("a plain request gets an answer");
    assert!(status.starts_with("HTTP/1.1 50"), "{status}");
    node.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let node = start_node(&agents_config(dir.path(), &pool, "on_unavailable = \"status\"", "")).await;
    let addr = node.addr("http").unwrap();
    for attempt in 0..3 {
        let target = format!("/api/agent/connect?token={}", agent_token("agent-17"));
        let (status, _) = exchange(addr, &upgrade_request(&target)).await.expect("a status");
        // 502 while a server is tried and fails, 503 once none is left.
        assert!(
            status == "HTTP/1.1 502 Bad Gateway" || status == "HTTP/1.1 503 Service Unavailable",
            "{attempt}: {status}"
        );
    }
    let target = format!("/api/agent/connect?token={}", agent_token("agent-17"));
    let (status, body) = exchange(addr, &upgrade_request(&target)).await.expect("a status");
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    assert!(body.starts_with("503"), "{body}");
    node.stop().await;
}
