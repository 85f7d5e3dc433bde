//! Tunnels hold no buffer while idle (issue #23): through a real node in
//! this process (the gauge `sysmanage_tunnel_buffered_bytes` is
//! process-wide, so the test runs alone), a tunnel whose reader stalls
//! holds exactly the bytes it could not pass on, and none once the reader
//! caught up; an idle tunnel then still carries a 100 MB message whole and
//! passes a half-close both ways.

use crate::{support, ALONE};

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::node_toml::NodeToml;
use support::*;
use sysmanage_node::metrics::COUNTERS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIG: usize = 100 * 1024 * 1024;

fn buffered() -> u64 {
    COUNTERS.tunnel_buffered_bytes.load(Ordering::Relaxed)
}

/// The server's side: sends 8 MiB at once (the client does not read yet),
/// then reads a message of [`BIG`] bytes and answers with its length and
/// a checksum, then waits for the client's half-close, answers "bye" and
/// closes.
async fn server() -> std::net::SocketAddr {
    upgrade_server(|mut s| async move {
        let burst = vec![b'x'; 8 * 1024 * 1024];
        if s.write_all(&burst).await.is_err() {
            return;
        }
        let (mut got, mut sum) = (0usize, 0u64);
        let mut buf = vec![0u8; 64 * 1024];
        while got < BIG {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    sum = buf[..n].iter().fold(sum, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(*b)));
                    got += n;
                }
            }
        }
        let _ = s.write_all(format!("{got} {sum}\n").as_bytes()).await;
        // The client's half-close arrives as the end of the stream.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        let _ = s.write_all(if rest.is_empty() { b"bye" } else { b"???" }).await;
        let _ = s.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_holds_only_unsent_bytes_an_idle_tunnel_none_and_it_still_carries_100_mb() {
    let _alone = ALONE.lock().await;
    tokio::time::timeout(Duration::from_secs(120), scenario()).await.expect("within 120 s");
}

async fn scenario() {
    let backend = server().await;
    let toml = NodeToml::new()
        .listener("http", "")
        .pool("p", &format!("servers = [{{ addr = \"{backend}\" }}]"))
        .route("ws", "/ws", "p", "websocket = true");
    let node = start_node(&toml.to_string()).await;
    let addr = node.addr("http").unwrap();
    assert_eq!(buffered(), 0, "no tunnel yet");

    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    // Read only the 101's head, then stall while the server sends 8 MiB.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    wait_until(Duration::from_secs(10), "the node holds the bytes the stalled client cannot take", || async {
        buffered() > 0
    })
    .await;
    let held = buffered();
    assert!(held <= 16 * 1024, "one spill per direction, at most a read's worth: {held}");

    // The client catches up: the tunnel goes idle and holds nothing.
    let mut burst = vec![0u8; 8 * 1024 * 1024];
    s.read_exact(&mut burst).await.unwrap();
    assert!(burst.iter().all(|b| *b == b'x'));
    wait_until(Duration::from_secs(5), "an idle tunnel holds no buffer", || async { buffered() == 0 }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(buffered(), 0, "still none after a while idle");
    assert_eq!(COUNTERS.websocket_tunnels.load(Ordering::Relaxed), 1, "the tunnel is open");

    // 100 MB through the idle tunnel, checked by length and checksum.
    let sum = {
        let chunk: Vec<u8> = (0..1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
        let mut sum = 0u64;
        for _ in 0..BIG / chunk.len() {
            s.write_all(&chunk).await.unwrap();
            sum = chunk.iter().fold(sum, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(*b)));
        }
        sum
    };
    let mut answer = Vec::new();
    while !answer.ends_with(b"\n") {
        s.read_exact(&mut byte).await.unwrap();
        answer.push(byte[0]);
    }
    assert_eq!(String::from_utf8_lossy(&answer), format!("{BIG} {sum}\n"), "the message arrived whole");

    // Half-close: the client ends its side, the server still answers.
    s.shutdown().await.unwrap();
    let mut tail = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut tail)).await.expect("the end").unwrap();
    assert_eq!(tail, b"bye", "the server saw the end of the stream and its answer passed");
    wait_until(Duration::from_secs(5), "the tunnel ended", || async {
        COUNTERS.websocket_tunnels.load(Ordering::Relaxed) == 0
    })
    .await;
    assert_eq!(buffered(), 0);
    node.stop().await;
}
