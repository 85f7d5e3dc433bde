//! HTTP/1.1 towards servers (`src/proxy/h1client.rs`) against raw TCP
//! servers that answer exactly as written here: body framings, interim
//! responses, connection reuse and when it must not happen, servers that
//! close idle connections, early answers to uploads, and malformed answers.

use crate::support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw server: `answer(request_head, connection_number, request_number)`
/// gives the bytes to write for each request head read on a connection
/// (`None` closes the connection). Counts accepted connections.
struct Raw {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Raw {
    async fn start<F>(answer: F) -> Raw
    where
        F: Fn(&str, usize, usize) -> Option<Vec<u8>> + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let (acc, hs) = (accepted.clone(), heads.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let conn = acc.fetch_add(1, Ordering::SeqCst) + 1;
                let (answer, hs) = (answer.clone(), hs.clone());
                tokio::spawn(async move { serve(s, conn, answer, hs).await });
            }
        });
        Raw { addr, accepted, heads }
    }

    fn pool(&self, extra: &str) -> String {
        pool_at(self.addr, extra)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// A pool of one server at `addr`, no retries, with `extra` lines.
fn pool_at(addr: std::net::SocketAddr, extra: &str) -> String {
    format!("retries = 0\n{extra}\nservers = [{{ addr = \"{addr}\" }}]")
}

/// Reads one request head from `s` into `buf` (which may hold bytes read
/// past it afterwards); the head's length, or `None` if the peer closed.
/// A raw server on 127.0.0.1:0 that hands its first connection to `handle`.
async fn one_connection_server<F, Fut>(handle: F) -> std::net::SocketAddr
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        handle(s).await;
    });
    addr
}

async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(p + 4);
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

async fn serve<F>(mut s: TcpStream, conn: usize, answer: Arc<F>, heads: Arc<Mutex<Vec<String>>>)
where
    F: Fn(&str, usize, usize) -> Option<Vec<u8>> + Send + Sync + 'static,
{
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        let Some(end) = read_head(&mut s, &mut buf).await else { return };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        n += 1;
        heads.lock().unwrap().push(head.clone());
        match answer(&head, conn, n) {
            Some(bytes) => {
                if s.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            None => return,
        }
    }
}

/// `n` GETs of `/` on one client connection; status and body of each.
async fn gets(node: std::net::SocketAddr, n: usize, method: &str) -> Vec<(StatusCode, String)> {
    let c = client();
    let mut out = Vec::new();
    for _ in 0..n {
        let req =
            Request::builder().method(method).uri(format!("http://{node}/")).body(Full::new(Bytes::new())).unwrap();
        let (status, _, body) = send(&c, req).await;
        out.push((status, body));
    }
    out
}

#[tokio::test]
async fn a_chunked_answer_is_decoded_and_its_connection_reused() {
    let raw = Raw::start(|_, _, _| {
        Some(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
                .to_vec(),
        )
    })
    .await;
    let node = start_node(&config(&raw.pool(""), "")).await;
    let got = gets(node.addr("http").unwrap(), 3, "GET").await;
    for (status, body) in got {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "hello, world");
    }
    assert_eq!(raw.accepted(), 1, "one server connection for three requests");
    node.stop().await;
}

#[tokio::test]
async fn an_answer_read_to_close_is_complete_and_its_connection_not_reused() {
    // No length, no chunking: the body ends when the server closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let acc = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            acc.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil close").await;
            // Dropping the stream closes it: the end of the body.
        }
    });
    let node = start_node(&config(&pool_at(addr, ""), "")).await;
    for (status, body) in gets(node.addr("http").unwrap(), 2, "GET").await {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "until close");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    node.stop().await;
}

#[tokio::test]
async fn connection_close_and_http10_answers_are_not_reused() {
    let raw =
        Raw::start(|_, _, _| Some(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok".to_vec()))
            .await;
    let node = start_node(&config(&raw.pool(""), "")).await;
    for (status, body) in gets(node.addr("http").unwrap(), 3, "GET").await {
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }
    assert_eq!(raw.accepted(), 3);
    node.stop().await;

    let raw = Raw::start(|_, _, _| Some(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())).await;
    let node = start_node(&config(&raw.pool(""), "")).await;
    for (status, body) in gets(node.addr("http").unwrap(), 3, "GET").await {
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }
    assert_eq!(raw.accepted(), 3, "HTTP/1.0 without keep-alive closes");
    node.stop().await;
}

#[tokio::test]
async fn interim_answers_are_skipped_and_head_answers_have_no_body() {
    let raw = Raw::start(|head, _, _| {
        if head.starts_with("HEAD") {
            Some(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec())
        } else {
            Some(
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"
                    .to_vec(),
            )
        }
    })
    .await;
    let node = start_node(&config(&raw.pool(""), "")).await;
    let addr = node.addr("http").unwrap();
    let got = gets(addr, 2, "HEAD").await;
    assert!(got.iter().all(|(s, b)| *s == StatusCode::OK && b.is_empty()), "{got:?}");
    let got = gets(addr, 2, "GET").await;
    assert!(got.iter().all(|(s, b)| *s == StatusCode::OK && b == "body"), "{got:?}");
    // A connection is never reused after a HEAD (a late body would reach
    // the next request): two HEADs, two connections; the GETs share one.
    assert_eq!(raw.accepted(), 3, "a connection is not reused after HEAD, and is after GET");
    node.stop().await;
}

#[tokio::test]
async fn a_server_closing_idle_connections_causes_no_errors() {
    // Answers one request per connection, then closes it without saying so
    // (as a server whose keep-alive timeout is shorter than ours).
    let closer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closer.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = closer.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
    });
    // max_fails = 1: a single failure would take the only server out.
    let pool = format!("retries = 0\nmax_fails = 1\nfail_timeout = \"30s\"\nservers = [{{ addr = \"{addr}\" }}]");
    let node = start_node(&config(&pool, "")).await;
    let c = client();
    let node_addr = node.addr("http").unwrap();
    for i in 0..10 {
        // Give the server time to close the pooled connection.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let (status, _, body) = get(&c, node_addr, "/").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"), "request {i}");
    }
    node.stop().await;
}

#[tokio::test]
async fn an_early_answer_to_an_upload_reaches_the_client() {
    // Refuses uploads at once: answers 413 after the head and closes.
    let raw = Raw::start(|_, _, _| {
        Some(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n".to_vec())
    })
    .await;
    let node = start_node(&config(&raw.pool(""), "[limits]\nmax_body = \"1GiB\"")).await;
    let c: hyper_util::client::legacy::Client<_, Upload> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let req = Request::post(format!("http://{}/upload", node.addr("http").unwrap()))
        .body(Upload { remaining: 64 << 20, chunk: Bytes::from(vec![b'u'; 256 * 1024]) })
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), c.request(req)).await.expect("an answer within 10 s") {
        Ok(resp) => assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE),
        // The node may close the client's connection while the client is
        // still sending; then the client sees an error, never a 502.
        Err(e) => assert!(!e.to_string().contains("502"), "{e}"),
    }
    node.stop().await;
}

#[tokio::test]
async fn a_chunked_upload_reaches_the_server_chunked() {
    let body_seen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let seen = body_seen.clone();
    let addr = one_connection_server(|mut s| async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        // Read until the terminating chunk.
        while !buf.ends_with(b"0\r\n\r\n") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        *seen.lock().unwrap() = buf;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    })
    .await;
    let node = start_node(&config(&pool_at(addr, ""), "")).await;
    let mut s = TcpStream::connect(node.addr("http").unwrap()).await.unwrap();
    s.write_all(
        b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut resp = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut resp)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&resp[..n]).starts_with("HTTP/1.1 200"));
    let seen = String::from_utf8_lossy(&body_seen.lock().unwrap()).into_owned();
    let (head, body) = seen.split_once("\r\n\r\n").unwrap();
    assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("content-length"), "{head}");
    // Re-chunked by the node: decode and compare the payload.
    let mut payload = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size, 16).unwrap();
        if size == 0 {
            break;
        }
        payload.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    assert_eq!(payload, "abcdefg");
    node.stop().await;
}

#[tokio::test]
async fn malformed_answers_are_502_and_a_broken_body_cuts_the_client_off() {
    for (answer, what) in [
        (&b"SSH-2.0-OpenSSH_9.2\r\n\r\n"[..], "not HTTP"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nbody", "conflicting lengths"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "invalid length"),
        (b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", "bad header line"),
    ] {
        let raw = Raw::start(move |_, _, _| Some(answer.to_vec())).await;
        let node = start_node(&config(&raw.pool(""), "")).await;
        let got = gets(node.addr("http").unwrap(), 1, "GET").await;
        assert_eq!(got[0].0, StatusCode::BAD_GATEWAY, "{what}: {got:?}");
        node.stop().await;
    }
    // A bad chunk size after the head, before any byte went to the client:
    // the fast path answers 502 instead (and a truncated body never looks
    // like a whole one).
    let raw = Raw::start(|_, _, _| {
        Some(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n".to_vec())
    })
    .await;
    let node = start_node(&config(&raw.pool(""), "")).await;
    let addr = node.addr("http").unwrap();
    let resp = raw_request(addr).await;
    assert!(resp.starts_with("HTTP/1.1 502 "), "{resp}");
    assert!(!resp.contains("hello"), "a broken body must not look complete: {resp:?}");
    node.stop().await;
}

/// One GET on a fresh connection, read until the node closes it (or 3 s).
async fn raw_request(node: std::net::SocketAddr) -> String {
    raw(node, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", Duration::from_secs(3)).await
}

#[tokio::test]
async fn request_heads_carry_the_forwarding_headers_once() {
    let raw = Raw::start(|_, _, _| Some(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec())).await;
    let node = start_node(&config(&raw.pool(""), "")).await;
    let c = client();
    let req = Request::get(format!("http://{}/a/b?c=d", node.addr("http").unwrap()))
        .header("connection", "x-hop")
        .header("x-hop", "drop me")
        .header("x-keep", "1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, _) = send(&c, req).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let head = raw.heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.starts_with("get /a/b?c=d http/1.1\r\n"), "{head}");
    for want in
        ["x-keep: 1\r\n", "x-real-ip: 127.0.0.1\r\n", "x-forwarded-for: 127.0.0.1\r\n", "x-forwarded-proto: http\r\n"]
    {
        assert_eq!(head.matches(want).count(), 1, "{want:?} once in {head}");
    }
    assert!(!head.contains("x-hop"), "{head}");
    node.stop().await;
}

#[tokio::test]
async fn an_interim_answer_during_an_upload_does_not_stop_it_and_expect_is_not_forwarded() {
    // Answers `100 Continue` right after the head (as servers do for
    // `Expect`, and may do unasked), then reads the whole body and answers
    // with the byte count and whether it was asked to continue.
    let addr = one_connection_server(|mut s| async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        let end = read_head(&mut s, &mut buf).await.expect("closed before the head");
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .expect("a content-length");
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.unwrap();
        let mut got = buf.len() - end;
        while got < length {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed mid-body after {got} bytes");
            got += n;
        }
        let text = format!("{got} expect={}", head.contains("expect:"));
        let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}", text.len());
        s.write_all(resp.as_bytes()).await.unwrap();
    })
    .await;
    let node = start_node(&config(&pool_at(addr, ""), "")).await;
    // 1 MiB: over the 64 KiB kept for retries, so it streams.
    let body = vec![b'x'; 1 << 20];
    let req = Request::post(format!("http://{}/up", node.addr("http").unwrap()))
        .header("expect", "100-continue")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let (status, _, text) =
        tokio::time::timeout(Duration::from_secs(10), send(&client(), req)).await.expect("answered");
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(text, format!("{} expect=false", 1 << 20));
    node.stop().await;
}

#[tokio::test]
async fn forwarding_headers_can_be_turned_off_and_then_pass_unchanged() {
    let raw = Raw::start(|_, _, _| Some(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec())).await;
    let node = start_node(&config(&raw.pool(""), "[headers]\nforwarded = false")).await;
    let req = Request::get(format!("http://{}/", node.addr("http").unwrap()))
        .header("x-forwarded-for", "198.51.100.7")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, _) = send(&client(), req).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let head = raw.heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.contains("x-forwarded-for: 198.51.100.7\r\n"), "{head}");
    assert_eq!(head.matches("x-forwarded-for").count(), 1, "{head}");
    for absent in ["x-real-ip", "x-forwarded-proto", "x-forwarded-host"] {
        assert!(!head.contains(absent), "{absent} in {head}");
    }
    node.stop().await;
}
