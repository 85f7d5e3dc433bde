//! A reconnect storm over TLS, small enough for `cargo test`: agents that
//! all connect at once (full handshakes, as after a node's restart) while
//! established tunnels keep beating. Its figures at 9,000 agents, against
//! nginx and HAProxy, are a benchmark (`bench/tunnels.sh storm`,
//! BENCHMARKS.md); here what must hold whatever the speed: every agent of
//! the storm gets its 101 and its server's greeting, none fails, every
//! heartbeat of an established tunnel is answered during it, and the
//! agents are pinned (a second connection lands where the first did).

use crate::support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use support::node_toml::NodeToml;
use support::tls::{client_trusting, write_cert, BOTH};
use support::ws::*;
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Wss = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// An agent's connection over TLS (a full handshake: each call has its own
/// client config's session cache, which [`client_trusting`] keeps apart):
/// the stream and the name of the server that greeted it.
async fn wss_agent(addr: SocketAddr, tls: TlsConnector, hostname: String) -> Result<(Wss, String), String> {
    let connect = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let stream =
            tls.connect(ServerName::try_from("localhost").unwrap(), tcp).await.map_err(|e| format!("TLS: {e}"))?;
        let target = format!("wss://localhost/api/agent/connect?token={}", agent_token(&hostname));
        let req = target.into_client_request().map_err(|e| e.to_string())?;
        let (mut ws, resp) = tokio_tungstenite::client_async_with_config(req, stream, Some(unlimited()))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            return Err(format!("status {}", resp.status()));
        }
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.starts_with("hello ") => Ok((ws, t["hello ".len()..].to_string())),
            other => Err(format!("unexpected greeting {other:?}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(60), connect).await.unwrap_or_else(|_| Err("no greeting in 60 s".into()))
}

/// Heartbeats of one established tunnel: sent and echoed, in the storm's
/// window or not.
#[derive(Default)]
struct Beats {
    answered: AtomicU64,
    during_storm: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_storming_in_over_tls_all_connect_while_established_tunnels_keep_their_heartbeats() {
    let (b1, b2) = (WsBackend::start("s1").await, WsBackend::start("s2").await);
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path(), "server", &["localhost"]);
    let toml = NodeToml::new()
        .node(&format!("data_dir = \"{}\"", dir.path().display()))
        .listener("https", &format!("tls = {{ {} }}", cert.inline()))
        .pool("agents", &sticky_pool(&[&b1, &b2], ""))
        .route("agent-ws", "/api/agent/connect", "agents", "websocket = true")
        .to_string();
    let node = start_node(&toml).await;
    let addr = node.addr("https").unwrap();
    let tls = || TlsConnector::from(client_trusting(&[&cert], BOTH, &[]));

    const ESTABLISHED: usize = 40;
    const STORM: usize = 300;
    let storming = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut beaters = Vec::new();
    for i in 0..ESTABLISHED {
        let (mut ws, _) = wss_agent(addr, tls(), format!("steady-{i}.example.com")).await.expect("established agent");
        let (beats, storming, stop) = (Arc::new(Beats::default()), storming.clone(), stop.clone());
        let counts = beats.clone();
        beaters.push((
            beats,
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let during = storming.load(Ordering::Relaxed);
                    let text = format!("{{\"heartbeat\":{n}}}");
                    ws.send(Message::text(text.clone())).await.map_err(|e| format!("send: {e}"))?;
                    match tokio::time::timeout(Duration::from_secs(30), next_data(&mut ws)).await {
                        Ok(Message::Text(t)) if *t == *text => {}
                        other => return Err(format!("heartbeat {n} answered with {other:?}")),
                    }
                    counts.answered.fetch_add(1, Ordering::Relaxed);
                    if during && storming.load(Ordering::Relaxed) {
                        counts.during_storm.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok::<_, String>(ws)
            }),
        ));
    }

    // The storm: every agent at once, each with a full TLS handshake.
    storming.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let storm =
        futures_util::future::join_all((0..STORM).map(|i| wss_agent(addr, tls(), format!("storm-{i}.example.com"))))
            .await;
    storming.store(false, Ordering::Relaxed);
    let took = started.elapsed();
    let mut failed = Vec::new();
    let mut landed = Vec::new();
    let mut open = Vec::new();
    for (i, r) in storm.into_iter().enumerate() {
        match r {
            Ok((ws, server)) => {
                landed.push(server);
                open.push(ws);
            }
            Err(e) => failed.push(format!("storm-{i}: {e}")),
        }
    }
    assert!(failed.is_empty(), "{} of {STORM} agents failed: {:?}", failed.len(), &failed[..failed.len().min(5)]);
    for name in ["s1", "s2"] {
        assert!(landed.iter().any(|s| s == name), "no agent of the storm on {name}: {landed:?}");
    }
    assert_eq!(b1.open() + b2.open(), (ESTABLISHED + STORM) as i64, "tunnels open at the servers");

    // The established tunnels went on beating through the storm.
    stop.store(true, Ordering::Relaxed);
    let mut during = 0;
    for (i, (beats, task)) in beaters.into_iter().enumerate() {
        let ws = task.await.unwrap().unwrap_or_else(|e| panic!("established agent {i}: {e}"));
        drop(ws);
        assert!(beats.answered.load(Ordering::Relaxed) > 0, "established agent {i} never beat");
        during += beats.during_storm.load(Ordering::Relaxed);
    }
    assert!(during > 0, "no heartbeat answered while the storm ({took:?}) went on");
    println!("storm of {STORM} over TLS: {took:?}; {during} heartbeats answered during it");

    // Each agent was pinned: it comes back to the server it had.
    drop(open);
    for (i, first) in landed.iter().enumerate().step_by(15) {
        let (_ws, again) = wss_agent(addr, tls(), format!("storm-{i}.example.com")).await.expect("reconnect");
        assert_eq!(&again, first, "storm-{i} moved");
    }
}
