//! WebSocket helpers: fake SysManage servers that speak both HTTP and
//! WebSocket, agent tokens, WebSocket clients, node configs with an agent
//! pool, and a small admin API client.
//!
//! A [`WsBackend`] answers an Upgrade with 101, then greets with the text
//! `hello NAME` (so a client knows where it landed), echoes text and binary,
//! answers pings (tungstenite does), records the pongs and close frames it
//! gets, and obeys two text commands: `close CODE REASON` (it closes with
//! that code) and `ping PAYLOAD` (it pings the client). Plain HTTP requests
//! get 200 with the name as body; `/api/health` answers the health status.
//! [`WsBackend::kill`] drops the listener and every connection, like a
//! killed server process.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{client, send, start_node, NodeToml};
use sysmanage_node::runtime::Node;

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// No limit on message or frame size (100 MB messages pass).
pub fn unlimited() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(None).max_frame_size(None)
}

/// Small buffers for thousands of idle connections in one process
/// (tungstenite allocates its 128 KiB read buffer eagerly).
pub fn small() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
}

pub struct WsState {
    pub name: String,
    config: WebSocketConfig,
    /// WebSocket upgrades answered with 101.
    pub upgrades: AtomicU64,
    /// WebSocket connections open now.
    pub open: AtomicI64,
    /// Plain HTTP requests (all paths but /api/health).
    pub http_hits: AtomicU64,
    pub health_status: AtomicU16,
    /// Hung, as a SIGSTOPped process: connections are still accepted by
    /// the kernel, nothing is answered any more.
    pub hung: std::sync::atomic::AtomicBool,
    /// The last request's target (path and query) and headers.
    pub last: Mutex<Option<(String, HeaderMap)>>,
    /// Close frames received from clients: (code, reason).
    pub closes: Mutex<Vec<(u16, String)>>,
    /// Pong payloads received from clients.
    pub pongs: Mutex<Vec<Bytes>>,
    /// Every task serving this backend, aborted by `kill`.
    tasks: Mutex<Vec<AbortHandle>>,
}

impl WsState {
    fn track(&self, h: AbortHandle) {
        let mut tasks = self.tasks.lock().unwrap();
        if tasks.len() % 512 == 511 {
            tasks.retain(|t| !t.is_finished());
        }
        tasks.push(h);
    }
}

pub struct WsBackend {
    pub addr: SocketAddr,
    pub state: Arc<WsState>,
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

impl WsBackend {
    pub async fn start(name: &str) -> WsBackend {
        Self::start_with(name, unlimited()).await
    }

    pub async fn start_with(name: &str, config: WebSocketConfig) -> WsBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(WsState {
            name: name.to_string(),
            config,
            upgrades: AtomicU64::new(0),
            open: AtomicI64::new(0),
            http_hits: AtomicU64::new(0),
            health_status: AtomicU16::new(200),
            hung: std::sync::atomic::AtomicBool::new(false),
            last: Mutex::new(None),
            closes: Mutex::new(Vec::new()),
            pongs: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let st2 = st.clone();
                let conn = tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| serve(st2.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
                st.track(conn.abort_handle());
            }
        });
        state.track(accept.abort_handle());
        WsBackend { addr, state }
    }

    /// Stops the backend like a killed process: the listener is closed (new
    /// connections are refused) and every open connection is dropped.
    pub fn kill(&self) {
        for t in self.state.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    pub fn upgrades(&self) -> u64 {
        self.state.upgrades.load(Ordering::SeqCst)
    }

    pub fn open(&self) -> i64 {
        self.state.open.load(Ordering::SeqCst)
    }

    pub fn http_hits(&self) -> u64 {
        self.state.http_hits.load(Ordering::SeqCst)
    }

    pub fn set_health(&self, status: u16) {
        self.state.health_status.store(status, Ordering::SeqCst);
    }

    /// From now on nothing is answered: not health checks, not requests,
    /// not messages on open WebSockets (a hung server process).
    pub fn hang(&self) {
        self.state.hung.store(true, Ordering::SeqCst);
    }

    pub fn last_target(&self) -> String {
        self.state.last.lock().unwrap().as_ref().map(|l| l.0.clone()).unwrap_or_default()
    }

    pub fn last_headers(&self) -> HeaderMap {
        self.state.last.lock().unwrap().as_ref().map(|l| l.1.clone()).unwrap_or_default()
    }

    pub fn closes(&self) -> Vec<(u16, String)> {
        self.state.closes.lock().unwrap().clone()
    }

    pub fn pongs(&self) -> Vec<Bytes> {
        self.state.pongs.lock().unwrap().clone()
    }
}

type Body = Full<Bytes>;

async fn serve(st: Arc<WsState>, mut req: Request<Incoming>) -> Result<Response<Body>, std::convert::Infallible> {
    if st.hung.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    if req.uri().path() == "/api/health" {
        let mut r = Response::new(Full::new(Bytes::from_static(b"{\"status\":\"healthy\"}")));
        *r.status_mut() = StatusCode::from_u16(st.health_status.load(Ordering::SeqCst)).unwrap();
        return Ok(r);
    }
    let target = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    *st.last.lock().unwrap() = Some((target, req.headers().clone()));
    let upgrade = req.headers().get("upgrade").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let Some(key) = req.headers().get("sec-websocket-key").filter(|_| upgrade).cloned() else {
        st.http_hits.fetch_add(1, Ordering::SeqCst);
        return Ok(Response::new(Full::new(Bytes::from(st.name.clone()))));
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let st2 = st.clone();
    let session = tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(st2.config)).await;
        st2.open.fetch_add(1, Ordering::SeqCst);
        let _open = OpenCount(st2.clone());
        session(&st2, ws).await;
    });
    st.track(session.abort_handle());
    st.upgrades.fetch_add(1, Ordering::SeqCst);
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    r.headers_mut().insert("upgrade", HeaderValue::from_static("websocket"));
    r.headers_mut().insert("connection", HeaderValue::from_static("Upgrade"));
    r.headers_mut().insert("sec-websocket-accept", derive_accept_key(key.as_bytes()).parse().unwrap());
    Ok(r)
}

struct OpenCount(Arc<WsState>);
impl Drop for OpenCount {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn session<S>(st: &WsState, mut ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if ws.send(Message::text(format!("hello {}", st.name))).await.is_err() {
        return;
    }
    while let Some(Ok(msg)) = ws.next().await {
        if st.hung.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let reply = match msg {
            Message::Text(t) => {
                if let Some(rest) = t.strip_prefix("close ") {
                    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
                    let frame = CloseFrame {
                        code: CloseCode::from(code.parse::<u16>().unwrap()),
                        reason: reason.to_string().into(),
                    };
                    let _ = ws.close(Some(frame)).await;
                    continue;
                }
                if let Some(payload) = t.strip_prefix("ping ") {
                    Message::Ping(Bytes::from(payload.to_string()))
                } else {
                    Message::Text(t)
                }
            }
            Message::Binary(b) => Message::Binary(b),
            Message::Pong(p) => {
                st.pongs.lock().unwrap().push(p);
                continue;
            }
            Message::Close(frame) => {
                let (code, reason) =
                    frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((0, String::new()));
                st.closes.lock().unwrap().push((code, reason));
                // tungstenite answers the close; keep polling to send it.
                continue;
            }
            Message::Ping(_) | Message::Frame(_) => continue,
        };
        if ws.send(reply).await.is_err() {
            return;
        }
    }
}

/// A SysManage connection token for `hostname`: base64 of the JSON the
/// server signs, with a fresh `connection_id` and timestamps every call, as
/// an agent gets for every attempt (the demo's backend makes the same).
pub fn agent_token(hostname: &str) -> String {
    sysmanage_node::demo::backend::connection_token(hostname, "127.0.0.1")
}

/// A JWT (unsigned: the node only reads claims) with these claims.
pub fn jwt(claims: serde_json::Value) -> String {
    let b64 = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let header = serde_json::json!({"alg": "HS256", "typ": "JWT"});
    format!("{}.{}.{:016x}", b64(&header), b64(&claims), fastrand::u64(..))
}

/// Opens a WebSocket to `http://node{target}` with extra headers and reads
/// the backend's greeting. Returns the stream and the backend's name.
pub async fn ws_connect_with(
    node: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
    config: WebSocketConfig,
) -> Result<(Ws, String), String> {
    let mut req = format!("ws://{node}{target}").into_client_request().map_err(|e| e.to_string())?;
    for (k, v) in headers {
        req.headers_mut().insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    let stream = TcpStream::connect(node).await.map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut ws, resp) = tokio_tungstenite::client_async_with_config(req, stream, Some(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(format!("status {}", resp.status()));
    }
    let hello = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .map_err(|_| "no greeting within 10 s".to_string())?
        .ok_or("closed before the greeting")?
        .map_err(|e| format!("greeting: {e}"))?;
    match hello {
        Message::Text(t) if t.starts_with("hello ") => Ok((ws, t["hello ".len()..].to_string())),
        other => Err(format!("unexpected greeting {other:?}")),
    }
}

/// An agent's connection: `GET /api/agent/connect?token=<fresh token>`.
pub async fn agent_connect(node: SocketAddr, hostname: &str) -> Result<(Ws, String), String> {
    let target = format!("/api/agent/connect?token={}", agent_token(hostname));
    ws_connect_with(node, &target, &[], unlimited()).await
}

/// Which backend an agent connection for `hostname` reaches; the
/// connection is closed again.
pub async fn agent_lands_on(node: SocketAddr, hostname: &str) -> String {
    let (mut ws, name) = agent_connect(node, hostname).await.unwrap_or_else(|e| panic!("{hostname}: {e}"));
    let _ = ws.close(None).await;
    name
}

/// Sends `msg` and returns the next data message (pings and pongs skipped).
pub async fn roundtrip(ws: &mut Ws, msg: Message) -> Message {
    ws.send(msg).await.expect("send");
    next_data(ws).await
}

/// The next text, binary or close message, within 30 s.
pub async fn next_data<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> Message {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a message within 30 s")
            .expect("stream still open")
            .expect("a valid message");
        match m {
            Message::Ping(_) | Message::Pong(_) => continue,
            other => return other,
        }
    }
}

/// A node config with an `agents` pool (`pool` is its body but the name)
/// behind two routes: `/api/agent/connect` for WebSocket upgrades (with the
/// route lines `ws_route`) and everything else. The session store lives in
/// `data_dir`.
pub fn agents_config(data_dir: &Path, pool: &str, ws_route: &str, admin: &str) -> String {
    NodeToml::new()
        .node(&format!("name = \"lb-test\"\ndata_dir = \"{}\"", data_dir.display()))
        .admin(admin)
        .listener("http", "")
        .pool("agents", pool)
        .route("agent-ws", "/api/agent/connect", "agents", &format!("websocket = true\n{ws_route}"))
        .route("default", "/", "agents", "")
        .to_string()
}

/// A node running [`agents_config`] around `pool`, its session store in
/// the returned temporary directory.
pub async fn start_agents_node(pool: &str) -> (Node, tempfile::TempDir) {
    agents_node(pool, false).await
}

/// [`start_agents_node`] whose admin API takes writes with [`ADMIN_TOKEN`].
pub async fn start_agents_node_with_token(pool: &str) -> (Node, tempfile::TempDir) {
    agents_node(pool, true).await
}

async fn agents_node(pool: &str, token: bool) -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let admin = if token { admin_token_line(dir.path()) } else { String::new() };
    let node = start_node(&agents_config(dir.path(), pool, "", &admin)).await;
    (node, dir)
}

/// Affinity on the hostname inside the agent's token.
pub const TOKEN_AFFINITY: &str = r#"affinity = { key = "query:token", extract = "sysmanage-token:hostname" }"#;

/// A pool over these backends that pins each agent (by the hostname in
/// its token, [`TOKEN_AFFINITY`]), with more settings `more` (may be empty).
pub fn sticky_pool(list: &[&WsBackend], more: &str) -> String {
    format!("{TOKEN_AFFINITY}\n{more}\n{}", ws_servers(list, ""))
}

/// `servers = [...]` for these WebSocket backends, each with `attrs`.
pub fn ws_servers(list: &[&WsBackend], attrs: &str) -> String {
    let sep = if attrs.is_empty() { "" } else { ", " };
    let items: Vec<String> =
        list.iter().map(|b| format!("{{ addr = \"{}\", name = \"{}\"{sep}{attrs} }}", b.addr, b.name())).collect();
    format!("servers = [{}]", items.join(", "))
}

/// The admin token used by these tests and a `token_file = ...` line for it.
pub const ADMIN_TOKEN: &str = "ws-test-token";

pub fn admin_token_line(dir: &Path) -> String {
    let path = dir.join("admin.token");
    std::fs::write(&path, format!("{ADMIN_TOKEN}\n")).unwrap();
    format!("token_file = \"{}\"", path.display())
}

/// One admin API call: status and body.
pub async fn admin_call(
    admin: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(format!("http://{admin}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let (status, _, body) = send(&client(), req.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await;
    (status, body)
}

/// The server the session `key` is pinned to, per the admin API.
pub async fn session_server(admin: SocketAddr, key: &str) -> Option<String> {
    let (status, body) = admin_call(admin, Method::GET, &format!("/api/v1/sessions?key={key}"), None, "").await;
    match status {
        StatusCode::NOT_FOUND => None,
        StatusCode::OK => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            Some(v[0]["server"].as_str().unwrap().to_string())
        }
        other => panic!("sessions API answered {other}: {body}"),
    }
}

/// Live sessions per server of pool `agents`, per the admin API.
pub async fn session_counts(admin: SocketAddr) -> std::collections::BTreeMap<String, usize> {
    let (status, body) = admin_call(admin, Method::GET, "/api/v1/sessions", None, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: sysmanage_node::api::SessionsView = serde_json::from_str(&body).unwrap();
    v.pools.get("agents").cloned().unwrap_or_default()
}
