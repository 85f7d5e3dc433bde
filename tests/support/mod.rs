//! Test helpers: in-process fake backends, a node started from TOML text
//! ([`node_toml`] writes it), the binary as a child process ([`process`]),
//! and small HTTP clients. Everything binds to loopback with ephemeral ports.
#![allow(dead_code)]

pub mod node_toml;
pub mod process;
pub mod tls;
pub mod ws;

pub use node_toml::*;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;

use sysmanage_node::config::parse_str;
use sysmanage_node::runtime::Node;

/// What a fake backend does with ordinary requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// 200 with the backend's name as body.
    Ok,
    /// This status, with the name as body.
    Status(u16),
    /// Close the connection without answering (new connections at accept).
    Reset,
    /// Read the request and its body, then close without answering.
    ResetAfterRead,
    /// Answer 200 after this long.
    Delay(Duration),
}

pub struct BackendState {
    pub name: String,
    mode: Mutex<Mode>,
    /// Requests seen (all paths but /api/health).
    pub hits: AtomicU64,
    /// Connections closed at accept in `Mode::Reset` (no request read).
    pub resets: AtomicU64,
    /// Request bodies' bytes received on /upload.
    pub upload_bytes: AtomicU64,
    /// The last request's head: method, uri, version, headers.
    pub last: Mutex<Option<(String, String, String, HeaderMap)>>,
    pub release: Notify,
    /// Status answered on /api/health (health checks); 200 by default.
    pub health_status: std::sync::atomic::AtomicU16,
    /// Requests on /api/health.
    pub health_hits: AtomicU64,
}

pub struct Backend {
    pub addr: SocketAddr,
    pub state: Arc<BackendState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(BackendState {
            name: name.to_string(),
            mode: Mutex::new(Mode::Ok),
            hits: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            upload_bytes: AtomicU64::new(0),
            last: Mutex::new(None),
            release: Notify::new(),
            health_status: std::sync::atomic::AtomicU16::new(200),
            health_hits: AtomicU64::new(0),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let st = st.clone();
                if *st.mode.lock().unwrap() == Mode::Reset {
                    st.resets.fetch_add(1, Ordering::SeqCst);
                    drop(stream);
                    continue;
                }
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| serve(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Backend { addr, state, task }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn set_health(&self, status: u16) {
        self.state.health_status.store(status, Ordering::SeqCst);
    }

    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Requests read plus connections reset at accept.
    pub fn attempts(&self) -> u64 {
        self.hits() + self.state.resets.load(Ordering::SeqCst)
    }

    pub fn last_headers(&self) -> HeaderMap {
        self.state.last.lock().unwrap().as_ref().map(|l| l.3.clone()).unwrap_or_default()
    }

    pub fn last_version(&self) -> String {
        self.state.last.lock().unwrap().as_ref().map(|l| l.2.clone()).unwrap_or_default()
    }
}

#[derive(Debug)]
struct Reset;
impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reset by test backend")
    }
}
impl std::error::Error for Reset {}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> BoxBody {
    Full::new(b.into()).boxed()
}

async fn serve(st: Arc<BackendState>, req: Request<Incoming>) -> Result<Response<BoxBody>, Reset> {
    if req.uri().path() == "/api/health" {
        st.health_hits.fetch_add(1, Ordering::SeqCst);
        let mut r = Response::new(full("{\"status\":\"healthy\"}"));
        *r.status_mut() = StatusCode::from_u16(st.health_status.load(Ordering::SeqCst)).unwrap();
        return Ok(r);
    }
    st.hits.fetch_add(1, Ordering::SeqCst);
    *st.last.lock().unwrap() =
        Some((req.method().to_string(), req.uri().to_string(), format!("{:?}", req.version()), req.headers().clone()));
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let mode = st.mode.lock().unwrap().clone();
    match path.as_str() {
        "/hold" => {
            st.release.notified().await;
            return Ok(Response::new(full(st.name.clone())));
        }
        "/download" => {
            let n: u64 = query.trim_start_matches("n=").parse().unwrap_or(0);
            let mut r =
                Response::new(Generated(Upload { remaining: n, chunk: Bytes::from(vec![b'x'; 64 * 1024]) }).boxed());
            r.headers_mut().insert("content-length", n.into());
            return Ok(r);
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Some(d) = f.data_ref() {
                            n += d.len() as u64;
                            st.upload_bytes.fetch_add(d.len() as u64, Ordering::SeqCst);
                        }
                    }
                    Err(_) => return Err(Reset),
                }
            }
            if let Mode::Status(s) = mode {
                let mut r = Response::new(full(format!("{n}")));
                *r.status_mut() = StatusCode::from_u16(s).unwrap();
                return Ok(r);
            }
            if matches!(mode, Mode::Reset | Mode::ResetAfterRead) {
                return Err(Reset);
            }
            return Ok(Response::new(full(format!("{n}"))));
        }
        "/echo" => {
            let mut text = String::new();
            for (k, v) in req.headers() {
                text.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
            }
            let mut r = Response::new(full(text));
            r.headers_mut().insert("connection", "x-resp-secret".parse().unwrap());
            r.headers_mut().insert("x-resp-secret", "1".parse().unwrap());
            r.headers_mut().insert("keep-alive", "timeout=5".parse().unwrap());
            r.headers_mut().insert("x-backend", st.name.parse().unwrap());
            return Ok(r);
        }
        _ => {}
    }
    match mode {
        Mode::Ok => Ok(Response::new(full(st.name.clone()))),
        Mode::Status(s) => {
            let mut r = Response::new(full(st.name.clone()));
            *r.status_mut() = StatusCode::from_u16(s).unwrap();
            Ok(r)
        }
        Mode::Reset | Mode::ResetAfterRead => Err(Reset),
        Mode::Delay(d) => {
            tokio::time::sleep(d).await;
            Ok(Response::new(full(st.name.clone())))
        }
    }
}

/// An [`Upload`] of 'x' whose length is known (the response gets a
/// Content-Length).
struct Generated(Upload);

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.remaining)
    }
}

/// A client-side streamed body of `remaining` bytes, without Content-Length.
pub struct Upload {
    pub remaining: u64,
    pub chunk: Bytes,
}

impl Body for Upload {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = (self.remaining as usize).min(self.chunk.len());
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
}

/// Starts a node in-process from TOML text.
pub async fn start_node(toml: &str) -> Node {
    let cfg = match parse_str(toml, "test.toml", std::path::Path::new(".")) {
        Ok(c) => c,
        Err(e) => panic!("test config invalid:\n{e}\n---\n{toml}"),
    };
    Node::start(cfg).await.expect("node starts")
}

/// Starts a node from TOML written to a file (so reload can re-read it).
pub async fn start_node_file(toml: &str) -> (Node, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, toml).unwrap();
    let cfg = match sysmanage_node::config::load_file(&path) {
        Ok(c) => c,
        Err(e) => panic!("test config invalid:\n{e}\n---\n{toml}"),
    };
    let node = Node::start_with_path(cfg, Some(path.clone())).await.expect("node starts");
    (node, dir, path)
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2_client() -> TestClient {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// Sends a request and reads the whole answer.
pub async fn send(c: &TestClient, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, String) {
    let resp = c.request(req).await.expect("request reaches the node");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

pub async fn get(c: &TestClient, node: SocketAddr, path: &str) -> (StatusCode, HeaderMap, String) {
    let req = Request::get(format!("http://{node}{path}")).body(Full::new(Bytes::new())).unwrap();
    send(c, req).await
}

/// A raw HTTP/1.1 exchange from a chosen local IP (127.0.0.x): writes
/// `request`, reads until the server closes or `deadline` passes.
pub async fn raw_from(local_ip: IpAddr, node: SocketAddr, request: &[u8], deadline: Duration) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(local_ip, 0)).unwrap();
    let mut stream = socket.connect(node).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_until_close(&mut stream, deadline).await
}

pub async fn raw(node: SocketAddr, request: &[u8], deadline: Duration) -> String {
    let mut stream = TcpStream::connect(node).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_until_close(&mut stream, deadline).await
}

pub async fn read_until_close(stream: &mut TcpStream, deadline: Duration) -> String {
    // What came before the close, or before the deadline if it stays open.
    let mut out = Vec::new();
    let _ = tokio::time::timeout(deadline, read_all(stream, &mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads into `out` until EOF or an error.
async fn read_all<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, out: &mut Vec<u8>) {
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// A raw server that answers every request head with a 101 (a WebSocket
/// upgrade), then hands the connection to `then`.
pub async fn upgrade_server<F, Fut>(then: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let then = Arc::new(then);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let then = then.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                    .await;
                then(s).await;
            });
        }
    });
    addr
}

/// Waits until `cond` holds, checking every 20 ms, or panics after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !cond().await {
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client body that sends `chunks` chunks of `size` bytes, one every
/// `every` (a slow but steady upload).
pub struct Paced {
    pub chunks: u32,
    pub size: usize,
    pub tick: tokio::time::Interval,
}

impl Paced {
    pub fn new(chunks: u32, size: usize, every: Duration) -> Self {
        Paced { chunks, size, tick: tokio::time::interval(every) }
    }
}

impl Body for Paced {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.chunks == 0 {
            return Poll::Ready(None);
        }
        match self.tick.poll_tick(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => {
                self.chunks -= 1;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'p'; self.size])))))
            }
        }
    }
}

/// Reads until the peer closes (EOF or reset) and returns what came before;
/// `None` if the connection is still open after `limit`. Unlike
/// [`read_until_close`], this tells "closed" from "still waiting".
pub async fn read_to_close<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(limit, read_all(stream, &mut out)).await;
    closed.ok().map(|_| out)
}

/// The admin API's `/metrics` text.
pub async fn scrape(node: &Node) -> String {
    let admin = node.admin.expect("admin enabled");
    let (status, _, body) = get(&client(), admin, "/metrics").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The value of the sample `name_and_labels` (e.g.
/// `sysmanage_ratelimited_total{zone="api"}`) in a `/metrics` text.
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A port free for both TCP and UDP on `ip` (a cluster node's gossip and
/// cluster API share it).
pub fn free_port(ip: IpAddr) -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind((ip, 0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

/// Writes a cluster secret file with mode 0600.
pub fn write_secret(path: &std::path::Path, secret: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A raw TCP "server" whose behaviour per connection is `handle`.
pub async fn raw_server<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(handle(s));
        }
    });
    addr
}
