//! `limits.send_timeout`: a client that stops reading a response is cut
//! off, with the server connection that was sending it; a client that
//! reads slowly, pausing for less than the timeout each time, is not.

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::*;
use sysmanage_node::runtime::Node;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// What the server declares: far more than any socket buffers hold.
const DECLARED: u64 = 1 << 30;

/// A server that answers every request with a `DECLARED`-byte body,
/// written as fast as its connection takes it, and reports on the channel
/// once its connection is closed under it (a write fails).
async fn endless_server() -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let addr = raw_server(move |mut s| {
        let closed = closed_tx.clone();
        async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let response = format!("HTTP/1.1 200 OK\r\nContent-Length: {DECLARED}\r\n\r\n");
            if s.write_all(response.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0u64;
            // Bounded: a node that never cuts fails the test by its deadline.
            let until = Instant::now() + Duration::from_secs(30);
            while sent < DECLARED && Instant::now() < until {
                match tokio::time::timeout(Duration::from_secs(1), s.write_all(&chunk)).await {
                    Ok(Ok(())) => sent += chunk.len() as u64,
                    Ok(Err(_)) => {
                        let _ = closed.send(());
                        return;
                    }
                    Err(_) => {} // blocked: the node is not reading, try again
                }
            }
        }
    })
    .await;
    (addr, closed)
}

/// A client socket with a small receive buffer, so that a client that
/// stops reading soon leaves the node's writes blocked.
async fn small_buffer_client(node: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8192).unwrap();
    socket.connect(node).await.unwrap()
}

const SEND_TIMEOUT: Duration = Duration::from_millis(1500);

async fn send_timeouts(node: &Node) -> f64 {
    metric(&scrape(node).await, "sysmanage_client_timeouts_total{timeout=\"send\"}").expect("the send timeouts counted")
}

/// A node in front of `server` with `send_timeout` set, listening on
/// `listeners`.
async fn node_with(server: SocketAddr, listeners: &str) -> Node {
    let pool = format!("retries = 0\nservers = [{{ addr = \"{server}\" }}]");
    let limits = format!("[limits]\nsend_timeout = \"{}ms\"", SEND_TIMEOUT.as_millis());
    start_node(&config_listeners(listeners, &pool, &limits, "")).await
}

async fn node_for(server: SocketAddr) -> Node {
    node_with(server, &listener("http", "")).await
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_after_send_timeout_and_so_is_the_server() {
    let (server, mut server_closed) = endless_server().await;
    let node = node_for(server).await;
    let addr = node.addr("http").unwrap();
    // Counters are the process's: other tests' nodes may add to them too.
    let cut_before = send_timeouts(&node).await;
    // A plain GET takes the node's own HTTP/1.1 path, a request with a body
    // hyper's: both write through the same connection wrapper.
    for (path, request) in [
        ("a GET", &b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n"[..]),
        ("a POST", &b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"[..]),
    ] {
        let mut s = small_buffer_client(addr).await;
        // The node's writes may block as soon as the response starts: the
        // lower bound counts from before the request.
        let asked = Instant::now();
        s.write_all(request).await.unwrap();
        let mut head = [0u8; 64];
        s.read_exact(&mut head).await.unwrap();
        assert!(head.starts_with(b"HTTP/1.1 200 OK\r\n"), "{path}: {}", String::from_utf8_lossy(&head));
        // From here the client reads nothing.
        tokio::time::timeout(Duration::from_secs(15), server_closed.recv())
            .await
            .unwrap_or_else(|_| panic!("{path}: the server's connection still open 15 s after the client stopped"))
            .unwrap();
        let cut = asked.elapsed();
        assert!(cut >= SEND_TIMEOUT, "{path}: cut {cut:?} after the request, before send_timeout");
        // The client finds its connection closed, its response incomplete.
        let rest = read_to_close(&mut s, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{path}: the client's connection not closed"));
        assert!(((rest.len() + head.len()) as u64) < DECLARED, "{path}: {} bytes", rest.len());
    }
    assert!(send_timeouts(&node).await >= cut_before + 2.0, "both cuts counted");
    // The node goes on serving.
    let mut s = small_buffer_client(addr).await;
    s.write_all(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut head = [0u8; 17];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200 OK\r\n");
    drop(s);
    node.stop().await;
}

#[tokio::test]
async fn a_client_that_reads_in_bursts_with_pauses_under_send_timeout_is_not_cut() {
    let (server, mut server_closed) = endless_server().await;
    let node = node_for(server).await;
    let mut s = small_buffer_client(node.addr("http").unwrap()).await;
    s.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let started = Instant::now();
    let mut total = 0usize;
    // Six bursts of up to 8 MiB, each followed by a third of send_timeout
    // without reading: 3 s in all, twice send_timeout.
    for burst in 0..6 {
        let mut got = 0usize;
        while got < 8 << 20 {
            match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                Ok(Ok(0)) => panic!("burst {burst}: closed after {:?}, {total} bytes", started.elapsed()),
                Ok(Ok(n)) => got += n,
                Ok(Err(e)) => panic!("burst {burst}: {e} after {:?}", started.elapsed()),
                Err(_) => break,
            }
        }
        assert!(got > 0, "burst {burst}: nothing to read");
        total += got;
        tokio::time::sleep(SEND_TIMEOUT / 3).await;
    }
    assert!(started.elapsed() >= SEND_TIMEOUT * 2, "{:?}", started.elapsed());
    assert!(server_closed.try_recv().is_err(), "the server's connection was closed");
    drop(s);
    node.stop().await;
}

#[tokio::test]
async fn a_tls_client_that_stops_reading_is_cut_after_send_timeout() {
    use support::tls::*;
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path(), "server", &["localhost"]);
    let (server, mut server_closed) = endless_server().await;
    let node = node_with(server, &listener("https", &format!("tls = {{ {} }}", cert.inline()))).await;
    let tcp = small_buffer_client(node.addr("https").unwrap()).await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_trusting(&[&cert], BOTH, &[]));
    let mut tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp)).await.unwrap().unwrap();
    let asked = Instant::now();
    tls.write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut head = [0u8; 17];
    tls.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200 OK\r\n");
    tokio::time::timeout(Duration::from_secs(15), server_closed.recv())
        .await
        .expect("the server's connection still open 15 s after the client stopped reading")
        .unwrap();
    assert!(asked.elapsed() >= SEND_TIMEOUT, "cut {:?} after the request", asked.elapsed());
    let rest = read_to_close(&mut tls, Duration::from_secs(10)).await.expect("the client's connection closed");
    assert!((rest.len() as u64) < DECLARED);
    drop(tls);
    node.stop().await;
}
