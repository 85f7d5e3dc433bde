//! Idle HTTP/1.1 keep-alive connections are parked (hyper's connection ended,
//! the socket kept) and served again when the client sends: requests after
//! an idle pause, pipelined and split requests, bodies, the header and
//! keep-alive timers, shutdown, and HTTP/2 beside it.
//!
//! A connection is parked at once after its response unless its client has
//! just sent back to back (its last pause was shorter than `PARK_AFTER`);
//! then only after `PARK_AFTER` of idleness. The tests cover both: `SHORT`
//! pauses keep a client back to back, `IDLE` pauses park any connection.
//! That a busy connection is not parked between its requests, and when
//! exactly parking happens, is checked in the unit tests of `proxy::conn`
//! and `proxy::http1`, which can see it.

use crate::support;

use std::time::{Duration, Instant};

use http::StatusCode;
use support::*;
use sysmanage_node::proxy::inbound::conn::PARK_AFTER;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Long enough for any connection to be parked after its response, also
/// one whose client sent back to back.
const IDLE: Duration = PARK_AFTER.checked_add(Duration::from_millis(500)).unwrap();

/// Short enough that the client still counts as sending back to back.
const SHORT: Duration = Duration::from_millis(50);

const FIXED_ROUTE: &str =
    "[[routes]]\nname = \"fixed\"\npath = \"/fixed\"\nrespond = { status = 200, body = \"fixed\\n\" }";

fn fixed_config(b: &Backend, limits: &str) -> String {
    config(&servers(&[(b, "")]), &format!("{limits}\n\n{FIXED_ROUTE}"))
}

/// Reads until `count` responses ending in `marker` arrived, or panics after 5 s.
async fn read_responses(stream: &mut TcpStream, marker: &str, count: usize) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while String::from_utf8_lossy(&out).matches(marker).count() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) => panic!("closed early; got {:?}", String::from_utf8_lossy(&out)),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("read failed: {e}; got {:?}", String::from_utf8_lossy(&out)),
            Err(_) => panic!("timed out; got {:?}", String::from_utf8_lossy(&out)),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_parked_connection_serves_requests_after_idling() {
    let b = Backend::start("b").await;
    let node = start_node(&fixed_config(&b, "")).await;
    let mut stream = TcpStream::connect(node.addr("http").unwrap()).await.unwrap();
    // Fixed and proxied (body from the server) requests, after pauses that
    // park at once (the first, and the first after a long one), do not park
    // (back to back) or park after PARK_AFTER (long after back to back).
    let steps = [
        ("/fixed", SHORT),
        ("/fixed", SHORT),
        ("/fixed", IDLE),
        ("/fixed", SHORT),
        ("/x", SHORT),
        ("/x", IDLE),
        ("/fixed", SHORT),
    ];
    for (i, (path, pause)) in steps.into_iter().enumerate() {
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await.unwrap();
        let marker = if path == "/x" { "\r\n\r\nb" } else { "fixed\n" };
        let resp = read_responses(&mut stream, marker, 1).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "request {i}: {resp}");
        tokio::time::sleep(pause).await;
    }
    assert_eq!(b.hits(), 2);
    node.stop().await;
}

#[tokio::test]
async fn pipelined_requests_are_all_answered_in_order() {
    let b = Backend::start("b").await;
    let node = start_node(&fixed_config(&b, "")).await;
    let mut stream = TcpStream::connect(node.addr("http").unwrap()).await.unwrap();
    stream
        .write_all(
            b"GET /fixed HTTP/1.1\r\nHost: t\r\n\r\nGET /x HTTP/1.1\r\nHost: t\r\n\r\nGET /fixed HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .await
        .unwrap();
    let resp = read_responses(&mut stream, "HTTP/1.1 200", 3).await;
    let resp = read_responses_more(&mut stream, resp, "fixed\n", 2).await;
    let first = resp.find("fixed\n").unwrap();
    let proxied = resp.find("\r\n\r\nb").expect("the proxied response");
    assert!(first < proxied, "{resp}");
    assert_eq!(b.hits(), 1);
    // The connection is still usable after the burst.
    tokio::time::sleep(IDLE).await;
    stream.write_all(b"GET /fixed HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    assert!(read_responses(&mut stream, "fixed\n", 1).await.starts_with("HTTP/1.1 200"));
    node.stop().await;
}

/// [`read_responses`], continuing after what was already read.
async fn read_responses_more(stream: &mut TcpStream, mut got: String, marker: &str, count: usize) -> String {
    while got.matches(marker).count() < count {
        got.push_str(&read_responses(stream, marker, 1).await);
    }
    got
}

/// Sends `count` requests for /fixed one after the other (back to back).
async fn fixed_requests(stream: &mut TcpStream, count: usize) {
    for _ in 0..count {
        stream.write_all(b"GET /fixed HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        assert!(read_responses(stream, "fixed\n", 1).await.starts_with("HTTP/1.1 200"));
    }
}

#[tokio::test]
async fn a_request_split_across_an_idle_pause_is_served() {
    let b = Backend::start("b").await;
    let node = start_node(&fixed_config(&b, "")).await;
    // Parked at once, or (after back-to-back requests) after PARK_AFTER.
    for earlier in [0, 2] {
        let mut stream = TcpStream::connect(node.addr("http").unwrap()).await.unwrap();
        fixed_requests(&mut stream, earlier).await;
        // A request and the start of the next arrive together.
        stream.write_all(b"GET /fixed HTTP/1.1\r\nHost: t\r\n\r\nGET /fix").await.unwrap();
        let resp = read_responses(&mut stream, "fixed\n", 1).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        tokio::time::sleep(IDLE).await;
        stream.write_all(b"ed HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        let resp = read_responses(&mut stream, "fixed\n", 1).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "after {earlier} earlier requests: {resp}");
    }
    node.stop().await;
}

#[tokio::test]
async fn a_request_with_a_body_then_idle_then_another() {
    let b = Backend::start("b").await;
    let node = start_node(&fixed_config(&b, "")).await;
    let mut stream = TcpStream::connect(node.addr("http").unwrap()).await.unwrap();
    stream.write_all(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello").await.unwrap();
    assert!(read_responses(&mut stream, "\r\n\r\nb", 1).await.starts_with("HTTP/1.1 200"));
    // A fixed response never reads its request body: hyper drains it.
    stream.write_all(b"POST /fixed HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello").await.unwrap();
    assert!(read_responses(&mut stream, "fixed\n", 1).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(IDLE).await;
    stream.write_all(b"GET /fixed HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let resp = read_responses(&mut stream, "fixed\n", 1).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(b.hits(), 1);
    node.stop().await;
}

#[tokio::test]
async fn a_parked_connection_gets_header_timeout_for_its_next_head() {
    let b = Backend::start("b").await;
    let node = start_node(&fixed_config(&b, "[limits]\nheader_timeout = \"1s\"\nkeepalive_timeout = \"30s\"")).await;
    // Parked at once, or (after back-to-back requests) after PARK_AFTER.
    for count in [1, 3] {
        let mut stream = TcpStream::connect(node.addr("http").unwrap()).await.unwrap();
        fixed_requests(&mut stream, count).await;
        tokio::time::sleep(IDLE).await;
        stream.write_all(b"GET /fixed HTTP/1.1\r\nHo").await.unwrap();
        let start = Instant::now();
        let rest = read_until_close(&mut stream, Duration::from_secs(5)).await;
        let elapsed = start.elapsed();
        assert!(!rest.contains("fixed\n"), "{rest}");
        assert!(
            elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
            "after {count} requests: closed after {elapsed:?}"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn shutdown_closes_parked_connections_without_waiting_for_the_deadline() {
    let b = Backend::start("b").await;
    let node = start_node(&fixed_config(&b, "[limits]\nshutdown_timeout = \"30s\"\nkeepalive_timeout = \"60s\"")).await;
    let mut stream = TcpStream::connect(node.addr("http").unwrap()).await.unwrap();
    stream.write_all(b"GET /fixed HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    read_responses(&mut stream, "fixed\n", 1).await;
    tokio::time::sleep(IDLE).await;
    tokio::time::timeout(Duration::from_secs(10), node.stop())
        .await
        .expect("shutdown waited for a parked keep-alive connection");
    let rest = read_until_close(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(rest, "", "a parked connection closes without a response");
    let mut probe = [0u8; 1];
    assert_eq!(stream.read(&mut probe).await.unwrap_or(0), 0, "the socket is closed");
}

#[tokio::test]
async fn http2_with_prior_knowledge_keeps_working_across_idle_periods() {
    let b = Backend::start("b").await;
    let node = start_node(&fixed_config(&b, "")).await;
    let addr = node.addr("http").unwrap();
    let c = h2_client();
    for pause in [SHORT, IDLE, SHORT, IDLE] {
        let (status, _, body) = get(&c, addr, "/fixed").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "fixed\n"));
        tokio::time::sleep(pause).await;
    }
    let (status, _, body) = get(&c, addr, "/x").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "b"));
    node.stop().await;
}
