//! A sample backend that answers like a SysManage server, for the demo:
//!
//! - `GET|HEAD /api/health` → 200 `{"status":"healthy"}`;
//! - `GET /api/health/db` → 200 `{"status":"healthy","database":"connected"}`;
//! - `POST /api/agent/auth` (header `x-agent-hostname`) → a connection token
//!   built like SysManage's: base64 of JSON `{"payload":{"connection_id",
//!   "hostname","client_ip","timestamp","expires"},"signature":"..."}`;
//! - `GET /api/agent/connect?token=...` with Upgrade → 101, then every text,
//!   binary or ping frame is echoed (pong for ping) until the agent closes;
//! - anything else → 200 JSON naming the backend (`GET /` included, which
//!   agents ask for before every WebSocket attempt).
//!
//! It counts what it serves so the demo can show where traffic went.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::ws;

/// What one backend has served.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Requests other than health checks (WebSocket upgrades included).
    pub requests: AtomicU64,
    /// `/api/health` and `/api/health/db` requests.
    pub health_checks: AtomicU64,
    /// WebSockets open now.
    pub tunnels: AtomicU64,
    /// Frames echoed.
    pub frames: AtomicU64,
}

pub struct SampleBackend {
    pub name: String,
    pub addr: SocketAddr,
    pub stats: Arc<BackendStats>,
    task: tokio::task::JoinHandle<()>,
}

impl SampleBackend {
    /// Binds `127.0.0.1:0` and serves until `shutdown` turns true (open
    /// WebSockets end then too).
    pub async fn start(name: &str, shutdown: watch::Receiver<bool>) -> std::io::Result<SampleBackend> {
        Self::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0)), shutdown).await
    }

    /// [`SampleBackend::start`] on `addr` (the soak restarts a backend on
    /// the address it had).
    pub async fn start_on(
        name: &str,
        addr: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<SampleBackend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(BackendStats::default());
        let me = Arc::new(Me { name: name.to_string(), stats: stats.clone(), shutdown: shutdown.clone() });
        let mut stop = shutdown;
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                    _ = stop.wait_for(|s| *s) => return,
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| serve(me.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(SampleBackend { name: name.to_string(), addr, stats, task })
    }

    /// Waits for the accept loop to end (after shutdown).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

struct Me {
    name: String,
    stats: Arc<BackendStats>,
    shutdown: watch::Receiver<bool>,
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

async fn serve(me: Arc<Me>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    if path == "/api/health" || path == "/api/health/db" {
        me.stats.health_checks.fetch_add(1, Ordering::Relaxed);
        let body = match path {
            "/api/health" => r#"{"status":"healthy"}"#,
            _ => r#"{"status":"healthy","database":"connected"}"#,
        };
        return Ok(served_by(&me, json(StatusCode::OK, body.to_string())));
    }
    me.stats.requests.fetch_add(1, Ordering::Relaxed);
    let response = match (req.method(), path) {
        (&Method::POST, "/api/agent/auth") => {
            let hostname = req.headers().get("x-agent-hostname").and_then(|v| v.to_str().ok()).unwrap_or("");
            if hostname.is_empty() {
                json(StatusCode::BAD_REQUEST, r#"{"detail":"x-agent-hostname header required"}"#.to_string())
            } else {
                let client_ip =
                    req.headers().get("x-real-ip").and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1").to_string();
                let token = connection_token(hostname, &client_ip);
                let body = serde_json::json!({ "connection_token": token, "expires_in": 3600 });
                json(StatusCode::OK, body.to_string())
            }
        }
        (_, "/api/agent/connect") => upgrade(&me, req),
        _ => {
            let body = serde_json::json!({ "message": "SysManage sample backend", "server": me.name, "path": path });
            json(StatusCode::OK, body.to_string())
        }
    };
    Ok(served_by(&me, response))
}

fn served_by(me: &Me, mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    if let Ok(v) = HeaderValue::from_str(&me.name) {
        r.headers_mut().insert("x-served-by", v);
    }
    r
}

/// 101 and an echo task, or 400/403 like the real server.
fn upgrade(me: &Arc<Me>, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let has_token = req.uri().query().unwrap_or("").split('&').any(|p| p.starts_with("token=") && p.len() > 6);
    if !has_token {
        return json(StatusCode::FORBIDDEN, r#"{"detail":"token required"}"#.to_string());
    }
    let Some(key) = req.headers().get("sec-websocket-key").and_then(|v| v.to_str().ok()).map(ws::accept_key) else {
        return json(StatusCode::BAD_REQUEST, r#"{"detail":"not a WebSocket request"}"#.to_string());
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let me = me.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        me.stats.tunnels.fetch_add(1, Ordering::Relaxed);
        let mut io = TokioIo::new(upgraded);
        let mut stop = me.shutdown.clone();
        loop {
            let frame = tokio::select! {
                f = ws::read_frame(&mut io) => Some(f),
                _ = stop.wait_for(|s| *s) => None,
            };
            let Some(frame) = frame else {
                // Going away: the node is shutting down.
                let _ = ws::write_frame(&mut io, ws::OP_CLOSE, &1001u16.to_be_bytes(), None).await;
                break;
            };
            let reply = match frame {
                Ok((ws::OP_PING, p)) => ws::write_frame(&mut io, ws::OP_PONG, &p, None).await,
                Ok((op @ (ws::OP_TEXT | ws::OP_BINARY), p)) => {
                    me.stats.frames.fetch_add(1, Ordering::Relaxed);
                    ws::write_frame(&mut io, op, &p, None).await
                }
                Ok((ws::OP_CLOSE, p)) => {
                    let _ = ws::write_frame(&mut io, ws::OP_CLOSE, &p, None).await;
                    break;
                }
                Ok(_) => Ok(()),
                Err(_) => break,
            };
            if reply.is_err() {
                break;
            }
        }
        me.stats.tunnels.fetch_sub(1, Ordering::Relaxed);
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&key) {
        h.insert("sec-websocket-accept", v);
    }
    r
}

/// A token shaped like SysManage's: standard base64 of the JSON payload and
/// a signature (random here: nothing checks it but the real server).
pub fn connection_token(hostname: &str, client_ip: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let hex = |n: usize| (0..n).map(|_| format!("{:02x}", fastrand::u8(..))).collect::<String>();
    let token = serde_json::json!({
        "payload": {
            "connection_id": hex(16),
            "hostname": hostname,
            "client_ip": client_ip,
            "timestamp": now,
            "expires": now + 3600,
        },
        "signature": hex(32),
    });
    base64::engine::general_purpose::STANDARD.encode(token.to_string())
}
