//! The traffic of the soak: agents that behave like SysManage's (`GET /`,
//! then the WebSocket `/api/agent/connect?token=...` with a fresh token
//! carrying the same hostname, a heartbeat every few seconds, a reconnect
//! through a random node after a random while), and REST requests at a
//! steady rate through all three nodes, some over TLS. Every failure is
//! checked against the faults: explained, or a violation.
//!
//! Requests use a connection each (`Connection: close`), so that a failure
//! belongs to one request and one node.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use sysmanage_node::demo::ws;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::world::{World, GRACE};

/// How often an agent sends a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long an agent holds its WebSocket before reconnecting.
const HOLD: std::ops::RangeInclusive<u64> = 20..=90;
const REST_PATHS: [&str; 4] = ["/api/hosts", "/api/packages", "/", "/api/updates"];

/// One exchange on a fresh connection; the status and the body.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, request: &str) -> Result<(u16, String), String> {
    s.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP answer ({} bytes)", raw.len()))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Ok((status, body))
}

fn request(method: &str, addr: SocketAddr, path: &str, extra: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n")
}

/// `GET path` on a fresh connection, within `limit`.
pub async fn http_get(addr: SocketAddr, path: &str, limit: Duration) -> Result<(u16, String), String> {
    let go = async {
        let s = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        exchange(s, &request("GET", addr, path, "")).await
    };
    tokio::time::timeout(limit, go).await.map_err(|_| format!("no answer within {limit:?}"))?
}

/// `POST path` with the admin token, within 5 s.
pub async fn admin_post(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let go = async {
        let s = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let auth = format!("Authorization: Bearer {}\r\nContent-Length: 0\r\n", crate::lab::ADMIN_TOKEN);
        exchange(s, &request("POST", addr, path, &auth)).await
    };
    tokio::time::timeout(Duration::from_secs(5), go).await.map_err(|_| "no answer within 5s".to_string())?
}

/// `GET path` over TLS, trusting only `roots` (PEM certificates).
pub async fn https_get(addr: SocketAddr, path: &str, roots: &[String]) -> Result<(u16, String), String> {
    let mut store = rustls::RootCertStore::empty();
    for pem in roots {
        for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes()).flatten() {
            let _ = store.add(cert);
        }
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(store).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let go = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let tls = connector.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
        exchange(tls, &request("GET", addr, path, "")).await
    };
    tokio::time::timeout(Duration::from_secs(5), go).await.map_err(|_| "no answer within 5s".to_string())?
}

// ---- REST ----

/// REST requests at `rate` per second to random nodes, one in five over
/// TLS, until `stop`. A failure through a node that was killed is
/// explained; any other (an error or a 5xx while a backend is up) breaks
/// "REST without errors".
pub async fn rest(world: Arc<World>, nodes: Vec<(SocketAddr, SocketAddr)>, rate: u64, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        n += 1;
        let node = fastrand::usize(..nodes.len());
        let (http, https) = nodes[node];
        let path = REST_PATHS[fastrand::usize(..REST_PATHS.len())];
        let world = world.clone();
        let tls = n.is_multiple_of(5);
        tokio::spawn(async move {
            let started = Instant::now();
            let result = if tls {
                let roots = world.certs.lock().unwrap().clone();
                https_get(https, path, &roots).await
            } else {
                http_get(http, path, Duration::from_secs(10)).await
            };
            match result {
                Ok((200, _)) => {
                    World::count(if tls { &world.tls_ok } else { &world.rest_ok });
                    if !tls {
                        world.rest_latencies.lock().unwrap().push(started.elapsed().as_micros() as u32);
                    }
                }
                other => {
                    World::count(&world.rest_failed);
                    let what = match other {
                        Ok((status, body)) => format!("{status} {}", body.trim()),
                        Err(e) => e,
                    };
                    let scheme = if tls { "https" } else { "http" };
                    world.node_failure(
                        node,
                        started,
                        "REST without errors",
                        format!("GET {scheme}://n{}{path}: {what}", node + 1),
                    );
                }
            }
        });
    }
}

// ---- agents ----

/// Why a WebSocket attempt failed.
enum Refused {
    /// No HTTP answer (refused, reset, timed out): the node may be down.
    NoAnswer(String),
    /// An HTTP answer other than 101.
    Status(String),
}

/// The WebSocket handshake through `node`: the stream and the backend that
/// took it (`x-served-by`).
async fn handshake(node: SocketAddr, hostname: &str) -> Result<(TcpStream, String), Refused> {
    let token = sysmanage_node::demo::backend::connection_token(hostname, "127.0.0.1");
    let token = utf8_percent_encode(&token, NON_ALPHANUMERIC);
    let go = async {
        let mut s = TcpStream::connect(node).await.map_err(|e| Refused::NoAnswer(format!("connect: {e}")))?;
        let req = format!(
            "GET /api/agent/connect?token={token} HTTP/1.1\r\nHost: {node}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.map_err(|e| Refused::NoAnswer(format!("write: {e}")))?;
        // Nothing follows the 101 until the agent speaks: byte by byte
        // to the blank line loses nothing.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
            match s.read_u8().await {
                Ok(b) => head.push(b),
                Err(e) if head.is_empty() => return Err(Refused::NoAnswer(format!("read: {e}"))),
                Err(e) => return Err(Refused::Status(format!("truncated answer: {e}"))),
            }
        }
        let head = String::from_utf8_lossy(&head).to_string();
        if !head.starts_with("HTTP/1.1 101") {
            return Err(Refused::Status(head.lines().next().unwrap_or("").to_string()));
        }
        let backend = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-served-by:").map(|v| v.trim().to_string()))
            .ok_or_else(|| Refused::Status("101 without x-served-by".into()))?;
        Ok((s, backend))
    };
    tokio::time::timeout(Duration::from_secs(10), go)
        .await
        .unwrap_or_else(|_| Err(Refused::NoAnswer("no answer within 10s".into())))
}

/// One agent's life: connect, hold with heartbeats, reconnect elsewhere.
pub struct Agent {
    pub hostname: String,
    pub nodes: Vec<SocketAddr>,
    pub backends: Vec<String>,
    pub world: Arc<World>,
    /// The backend it is on and when it connected there.
    pub home: Arc<std::sync::Mutex<Option<(String, Instant)>>>,
}

impl Agent {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        // Spread the first connections over the first ten seconds.
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(fastrand::u64(0..10_000))) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        while !*stop.borrow() {
            let node = fastrand::usize(..self.nodes.len());
            self.session(node, &mut stop).await;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(fastrand::u64(200..2000))) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    fn backend_index(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b == name)
    }

    async fn session(&self, node: usize, stop: &mut watch::Receiver<bool>) {
        let w = &self.world;
        let started = Instant::now();
        // What an agent asks first.
        if let Err(e) = http_get(self.nodes[node], "/", Duration::from_secs(10)).await {
            w.node_failure(node, started, "REST without errors", format!("agent GET / through n{}: {e}", node + 1));
            return;
        }
        let (mut stream, backend) = match handshake(self.nodes[node], &self.hostname).await {
            Ok(x) => x,
            Err(Refused::NoAnswer(e)) => {
                World::count(&w.agent_failed);
                w.node_failure(
                    node,
                    started,
                    "every Upgrade answered 101",
                    format!("{} through n{}: {e}", self.hostname, node + 1),
                );
                return;
            }
            Err(Refused::Status(line)) => {
                World::count(&w.agent_failed);
                let all_down = (0..self.backends.len()).all(|b| w.backend_down[b].now_open());
                if all_down {
                    w.explained("every Upgrade answered 101: no backend up".into());
                } else {
                    w.violation(
                        "every Upgrade answered 101",
                        format!("{} through n{}: {line}", self.hostname, node + 1),
                    );
                }
                return;
            }
        };
        World::count(&w.agent_connects);
        self.check_move(&backend);
        w.tunnels_open.fetch_add(1, Ordering::Relaxed);
        let held = self.hold(&mut stream, stop).await;
        w.tunnels_open.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = held {
            // A tunnel may end when its backend dies or is drained (the
            // node closes a down server's tunnels), or its node dies.
            let b = self.backend_index(&backend);
            let now = Instant::now();
            let backend_out = b.is_some_and(|b| {
                w.backend_down[b].during(started, now, GRACE) || w.backend_drained[b].during(started, now, GRACE)
            });
            if backend_out {
                w.explained(format!("tunnel closed: its backend {backend} was killed or drained"));
            } else {
                w.node_failure(
                    node,
                    started,
                    "tunnels stay open",
                    format!("{} on {backend} through n{}: {e}", self.hostname, node + 1),
                );
            }
        }
    }

    /// The agent is on `backend` now: a move from where it was is allowed
    /// only when that backend was killed or drained since.
    fn check_move(&self, backend: &str) {
        let w = &self.world;
        let mut home = self.home.lock().unwrap();
        if let Some((old, since)) = home.as_ref() {
            if old != backend {
                World::count(&w.agent_moves);
                let out = self.backend_index(old).is_some_and(|b| {
                    w.backend_down[b].during(*since, Instant::now(), GRACE)
                        || w.backend_drained[b].during(*since, Instant::now(), GRACE)
                });
                if out {
                    w.explained(format!("agent moved: {old} was killed or drained"));
                } else {
                    w.violation(
                        "agents stay on their backend",
                        format!("{} moved from {old} to {backend} while {old} was up", self.hostname),
                    );
                }
            }
        }
        *home = Some((backend.to_string(), Instant::now()));
    }

    /// Heartbeats until the hold time ends (then a normal close) or `stop`.
    async fn hold(&self, stream: &mut TcpStream, stop: &mut watch::Receiver<bool>) -> Result<(), String> {
        let until = tokio::time::Instant::now() + Duration::from_secs(fastrand::u64(HOLD));
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        loop {
            tokio::select! {
                _ = beat.tick() => {}
                _ = tokio::time::sleep_until(until) => break,
                _ = stop.wait_for(|s| *s) => break,
            }
            let text = format!("{{\"message_type\":\"heartbeat\",\"hostname\":\"{}\"}}", self.hostname);
            ws::write_frame(stream, ws::OP_TEXT, text.as_bytes(), Some(fastrand::u32(..).to_be_bytes()))
                .await
                .map_err(|e| format!("heartbeat: {e}"))?;
            let echo = tokio::time::timeout(Duration::from_secs(10), ws::read_frame(stream))
                .await
                .map_err(|_| "no echo within 10s".to_string())?
                .map_err(|e| format!("echo: {e}"))?;
            if echo != (ws::OP_TEXT, text.into_bytes()) {
                return Err(format!("unexpected frame (opcode {})", echo.0));
            }
            World::count(&self.world.heartbeats);
        }
        let _ = ws::write_frame(stream, ws::OP_CLOSE, &1000u16.to_be_bytes(), Some([7, 7, 7, 7])).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), ws::read_frame(stream)).await;
        Ok(())
    }
}
