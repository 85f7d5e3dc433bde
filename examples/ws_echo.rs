//! A tiny standalone WebSocket echo server for benchmarks.
//!
//!   ws_echo ADDR [ADDR...]     e.g. ws_echo 127.0.0.1:18481 127.0.0.1:18482
//!
//! Answers every Upgrade with 101 (tokio-tungstenite, small buffers), echoes
//! text and binary messages; /api/health and other plain requests get 200.
//! Single-threaded runtime. Prints the open-connection count every 5 s to stderr.
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

static OPEN: AtomicI64 = AtomicI64::new(0);

fn find_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn conn(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let key = find_header(&head, "sec-websocket-key");
            let upgrade = find_header(&head, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
            match key.filter(|_| upgrade) {
                Some(key) => {
                    let resp = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                        derive_accept_key(key.as_bytes())
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    break;
                }
                None => {
                    let body = "{\"status\":\"healthy\"}";
                    let resp =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    let _ = s.write_all(resp.as_bytes()).await;
                    return;
                }
            }
        }
        if buf.len() > 16384 {
            return;
        }
    }
    drop(buf);
    let cfg = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let ws = WebSocketStream::from_raw_socket(s, Role::Server, Some(cfg)).await;
    OPEN.fetch_add(1, Ordering::Relaxed);
    let (mut tx, mut rx) = ws.split();
    while let Some(Ok(m)) = rx.next().await {
        if m.is_text() || m.is_binary() {
            if tx.send(m).await.is_err() {
                break;
            }
        } else if m.is_close() {
            break;
        }
    }
    OPEN.fetch_sub(1, Ordering::Relaxed);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addrs: Vec<String> = std::env::args().skip(1).collect();
    assert!(!addrs.is_empty(), "usage: ws_echo ADDR [ADDR...]");
    let mut tasks = Vec::new();
    for a in addrs {
        let l = Arc::new(TcpListener::bind(&a).await.expect("bind"));
        tasks.push(tokio::spawn(async move {
            loop {
                if let Ok((s, _)) = l.accept().await {
                    tokio::spawn(conn(s));
                }
            }
        }));
    }
    tokio::spawn(async {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            eprintln!("ws_echo open={}", OPEN.load(Ordering::Relaxed));
        }
    });
    for t in tasks {
        let _ = t.await;
    }
}
