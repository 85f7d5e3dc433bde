//! A raw-socket HTTP/1.1 server for the smuggling tests: it records every
//! byte each connection brings, in order, parses the requests with the
//! strict parser ([`crate::strict_h1`]) and answers each as a script says.
//!
//! By default every request gets `200` with `Content-Length` and the body
//! `target=<request-target>`, and the connection stays open. A script can
//! instead write any bytes, pause, or close, per request.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::strict_h1::{parse_request, Parsed, ParsedRequest};

/// What the server does, in order, for one request.
#[derive(Debug, Clone)]
pub enum Action {
    /// The default answer (see [`default_response`]).
    Default,
    Write(Vec<u8>),
    Sleep(Duration),
    /// Close the connection (nothing more is read or answered).
    Close,
}

/// Where a request came: connection (in accept order), its index on that
/// connection, and its index among all requests the server has seen.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub conn: usize,
    pub on_conn: usize,
    pub seq: usize,
}

pub type Script = Arc<dyn Fn(Ctx, &ParsedRequest) -> Vec<Action> + Send + Sync>;

/// One connection as the server saw it.
#[derive(Debug, Clone, Default)]
pub struct ConnLog {
    pub bytes: Vec<u8>,
    /// The node closed (or reset) the connection.
    pub eof: bool,
    /// The server closed it (an [`Action::Close`]).
    pub closed_here: bool,
    /// The bytes stopped making sense to the strict parser (the server
    /// stopped answering then, and only records).
    pub error: Option<String>,
}

/// A request the server parsed, in arrival order.
#[derive(Debug, Clone)]
pub struct Seen {
    pub seq: usize,
    pub conn: usize,
    pub req: ParsedRequest,
}

#[derive(Default)]
struct Shared {
    conns: Vec<ConnLog>,
    seen: Vec<Seen>,
}

pub struct RawBackend {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `200`, `Content-Length`, body `target=<target>` (no body for HEAD).
pub fn default_response(req: &ParsedRequest) -> Vec<u8> {
    let body = format!("target={}", req.target);
    let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    if req.method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// A script that answers requests for `target` with `actions` and all
/// others by default.
pub fn answer(target: &'static str, actions: Vec<Action>) -> Script {
    Arc::new(move |_, req| if req.target == target { actions.clone() } else { vec![Action::Default] })
}

impl RawBackend {
    /// Answers every request by default.
    pub async fn start() -> RawBackend {
        RawBackend::with_script(Arc::new(|_, _| vec![Action::Default])).await
    }

    pub async fn with_script(script: Script) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let sh = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = {
                    let mut s = sh.lock().unwrap();
                    s.conns.push(ConnLog::default());
                    s.conns.len() - 1
                };
                tokio::spawn(serve(stream, conn, sh.clone(), script.clone()));
            }
        });
        RawBackend { addr, shared, task }
    }

    /// Every connection so far, in accept order.
    pub fn conns(&self) -> Vec<ConnLog> {
        self.shared.lock().unwrap().conns.clone()
    }

    /// Every request parsed so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().unwrap().seen.clone()
    }

    pub fn conn_count(&self) -> usize {
        self.shared.lock().unwrap().conns.len()
    }
}

async fn serve(mut stream: TcpStream, conn: usize, shared: Arc<Mutex<Shared>>, script: Script) {
    let mut buf = Vec::new();
    let mut pos = 0;
    let mut on_conn = 0;
    let mut broken = false;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                shared.lock().unwrap().conns[conn].eof = true;
                return;
            }
            Ok(n) => n,
        };
        shared.lock().unwrap().conns[conn].bytes.extend_from_slice(&chunk[..n]);
        buf.extend_from_slice(&chunk[..n]);
        while !broken && pos < buf.len() {
            let req = match parse_request(&buf[pos..]) {
                Ok(Parsed::Done(req, used)) => {
                    pos += used;
                    req
                }
                Ok(Parsed::Partial) => break,
                Err(e) => {
                    shared.lock().unwrap().conns[conn].error = Some(format!("at byte {pos}: {e}"));
                    broken = true;
                    break;
                }
            };
            let ctx = {
                let mut s = shared.lock().unwrap();
                let seq = s.seen.len();
                s.seen.push(Seen { seq, conn, req: req.clone() });
                Ctx { conn, on_conn, seq }
            };
            on_conn += 1;
            for action in script(ctx, &req) {
                let written = match action {
                    Action::Default => stream.write_all(&default_response(&req)).await,
                    Action::Write(bytes) => stream.write_all(&bytes).await,
                    Action::Sleep(d) => {
                        tokio::time::sleep(d).await;
                        Ok(())
                    }
                    Action::Close => {
                        let _ = stream.shutdown().await;
                        shared.lock().unwrap().conns[conn].closed_here = true;
                        return;
                    }
                };
                if written.is_err() {
                    shared.lock().unwrap().conns[conn].eof = true;
                    return;
                }
            }
        }
    }
}
