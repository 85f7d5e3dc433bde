//! Light synthetic traffic for the demo: a trickle of HTTP requests spread
//! over the nodes, and agents that behave like SysManage's: `GET /`, then
//! `POST /api/agent/auth` for a fresh token, then a WebSocket to
//! `/api/agent/connect?token=...` held with heartbeats for a while, then a
//! reconnect through the next node (the affinity key, the host name inside
//! the token, keeps the agent on the same backend).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ws;

/// HTTP requests per second over all nodes.
const HTTP_RATE: u64 = 10;
/// Paths the HTTP trickle asks for (all go to the `api` pool).
const PATHS: [&str; 4] = ["/", "/api/hosts", "/api/packages", "/api/updates"];
/// How often an agent sends a heartbeat (real agents: every 30 s).
const HEARTBEAT: Duration = Duration::from_secs(3);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Counters the summary reads.
#[derive(Debug)]
pub struct TrafficStats {
    /// Agents' WebSockets open now, per node (index = node).
    pub tunnels: Vec<AtomicU64>,
    /// Agent connections made, per node.
    pub connects: Vec<AtomicU64>,
    /// Requests that got no answer or a 5xx.
    pub errors: AtomicU64,
}

pub struct Traffic {
    pub stats: Arc<TrafficStats>,
    tasks: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// Starts the HTTP trickle and `agents` agents against `nodes`; all of
    /// it ends when `stop` turns true (agents close their WebSockets).
    pub fn start(nodes: Vec<SocketAddr>, agents: usize, stop: watch::Receiver<bool>) -> Traffic {
        let stats = Arc::new(TrafficStats {
            tunnels: nodes.iter().map(|_| AtomicU64::new(0)).collect(),
            connects: nodes.iter().map(|_| AtomicU64::new(0)).collect(),
            errors: AtomicU64::new(0),
        });
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let mut tasks = vec![tokio::spawn(http_trickle(client.clone(), nodes.clone(), stats.clone(), stop.clone()))];
        for i in 0..agents {
            let agent = Agent {
                hostname: format!("agent-{:02}.demo.local", i + 1),
                nodes: nodes.clone(),
                client: client.clone(),
                stats: stats.clone(),
            };
            tasks.push(tokio::spawn(agent.run(i, stop.clone())));
        }
        Traffic { stats, tasks }
    }

    /// Waits until every task has ended (after `stop`).
    pub async fn stopped(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn http_trickle(
    client: HttpClient,
    nodes: Vec<SocketAddr>,
    stats: Arc<TrafficStats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / HTTP_RATE));
    let mut n = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let node = nodes[n % nodes.len()];
        let path = PATHS[(n / nodes.len()) % PATHS.len()];
        n += 1;
        let client = client.clone();
        let stats = stats.clone();
        // Not awaited in line: a slow answer must not slow the trickle.
        tokio::spawn(async move {
            match request(&client, Method::GET, node, path, &[]).await {
                Some((status, _)) if status < 500 => {}
                _ => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

/// One request with a 5 s limit: status and body, or `None`.
async fn request(
    client: &HttpClient,
    method: Method,
    node: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, Bytes)> {
    let mut req = Request::builder().method(method).uri(format!("http://{node}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::new())).ok()?;
    let exchange = async {
        let resp = client.request(req).await.ok()?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange).await.ok().flatten()
}

struct Agent {
    hostname: String,
    nodes: Vec<SocketAddr>,
    client: HttpClient,
    stats: Arc<TrafficStats>,
}

impl Agent {
    async fn run(self, index: usize, mut stop: watch::Receiver<bool>) {
        // Agents start a little apart, each on its own node.
        let mut node = index % self.nodes.len();
        let start_delay = Duration::from_millis(200 * index as u64);
        tokio::select! {
            _ = tokio::time::sleep(start_delay) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        loop {
            if self.session(node, &mut stop).await.is_err() {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
            if *stop.borrow() {
                return;
            }
            node = (node + 1) % self.nodes.len();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// One connection: `GET /`, auth, WebSocket held for 15..30 s.
    async fn session(&self, node_index: usize, stop: &mut watch::Receiver<bool>) -> Result<(), String> {
        let node = self.nodes[node_index];
        request(&self.client, Method::GET, node, "/", &[]).await.ok_or("GET / failed")?;
        let (status, body) = request(
            &self.client,
            Method::POST,
            node,
            "/api/agent/auth",
            &[("x-agent-hostname", self.hostname.as_str())],
        )
        .await
        .ok_or("auth failed")?;
        if status != 200 {
            return Err(format!("auth answered {status}"));
        }
        let auth: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let token = auth["connection_token"].as_str().ok_or("no token")?;

        let mut stream = connect(node, token).await?;
        self.stats.connects[node_index].fetch_add(1, Ordering::Relaxed);
        self.stats.tunnels[node_index].fetch_add(1, Ordering::Relaxed);
        let held = self.hold(&mut stream, stop).await;
        self.stats.tunnels[node_index].fetch_sub(1, Ordering::Relaxed);
        held
    }

    async fn hold(&self, stream: &mut TcpStream, stop: &mut watch::Receiver<bool>) -> Result<(), String> {
        let until = tokio::time::Instant::now() + Duration::from_secs(fastrand::u64(15..=30));
        let mut beat = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                _ = beat.tick() => {}
                _ = tokio::time::sleep_until(until) => break,
                _ = stop.wait_for(|s| *s) => break,
            }
            let message = serde_json::json!({ "message_type": "heartbeat", "hostname": self.hostname });
            let text = message.to_string();
            ws::write_frame(stream, ws::OP_TEXT, text.as_bytes(), Some(fastrand::u32(..).to_be_bytes()))
                .await
                .map_err(|e| e.to_string())?;
            let echo = tokio::time::timeout(Duration::from_secs(5), ws::read_frame(stream))
                .await
                .map_err(|_| "no echo within 5s")?
                .map_err(|e| e.to_string())?;
            if echo != (ws::OP_TEXT, text.into_bytes()) {
                return Err("wrong echo".into());
            }
        }
        // Normal closure, then wait briefly for the server's close.
        let _ = ws::write_frame(stream, ws::OP_CLOSE, &1000u16.to_be_bytes(), Some([7, 7, 7, 7])).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), ws::read_frame(stream)).await;
        Ok(())
    }
}

/// The WebSocket handshake through a node; the stream after the 101.
async fn connect(node: SocketAddr, token: &str) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(node).await.map_err(|e| e.to_string())?;
    let token = utf8_percent_encode(token, NON_ALPHANUMERIC);
    let request = format!(
        "GET /api/agent/connect?token={token} HTTP/1.1\r\nHost: {node}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    // The server sends nothing after the 101 until the agent speaks, so
    // reading byte by byte up to the blank line loses nothing.
    let mut head = Vec::new();
    let read_head = async {
        while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
            let b = stream.read_u8().await?;
            head.push(b);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(5), read_head)
        .await
        .map_err(|_| "no answer to the upgrade within 5s")?
        .map_err(|e| format!("upgrade: {e}"))?;
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!("upgrade answered {}", head.lines().next().unwrap_or("")));
    }
    if !head.to_ascii_lowercase().contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=") {
        return Err("wrong Sec-WebSocket-Accept".into());
    }
    Ok(stream)
}
