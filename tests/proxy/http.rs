//! Request handling through a real node: header rewriting, HTTP/2 to
//! HTTP/1.1, limits and timeouts, malformed input, static files, fixed
//! responses and redirects.

use crate::support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn headers_are_rewritten_both_ways() {
    let b = Backend::start("b").await;
    let node = start_node(&config(&servers(&[(&b, "")]), "")).await;
    let addr = node.addr("http").unwrap();
    let req = Request::get(format!("http://{addr}/echo?x=1"))
        .header("host", "sysmanage.example.com")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9v")
        .header("x-custom", "kept")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, _) = send(&client(), req).await;
    assert_eq!(status, StatusCode::OK);
    let seen = b.last_headers();
    assert_eq!(seen["host"], "sysmanage.example.com");
    // The client is not a trusted proxy: its own X-Forwarded-For is dropped.
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-real-ip"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "sysmanage.example.com");
    assert_eq!(seen["x-custom"], "kept");
    for hop in ["x-hop", "keep-alive", "proxy-authorization", "te", "upgrade"] {
        assert!(!seen.contains_key(hop), "{hop} reached the server: {seen:?}");
    }
    // Response: the server's hop-by-hop headers are gone, security headers added.
    assert!(!headers.contains_key("x-resp-secret"), "{headers:?}");
    assert!(!headers.contains_key("keep-alive"), "{headers:?}");
    assert_eq!(headers["x-backend"], "b");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-xss-protection"], "1; mode=block");
    assert!(!headers.contains_key("strict-transport-security"), "HSTS on plain HTTP");
    node.stop().await;
}

#[tokio::test]
async fn security_headers_can_be_turned_off() {
    let b = Backend::start("b").await;
    let node = start_node(&config(&servers(&[(&b, "")]), "[headers]\nsecurity = false")).await;
    let (_, headers, _) = get(&client(), node.addr("http").unwrap(), "/").await;
    assert!(!headers.contains_key("x-frame-options"));
    node.stop().await;
}

#[tokio::test]
async fn http2_client_reaches_an_http11_server() {
    let b = Backend::start("b").await;
    let node = start_node(&config(&servers(&[(&b, "")]), "")).await;
    let addr = node.addr("http").unwrap();
    let (status, _, body) = get(&h2_client(), addr, "/echo").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(b.last_version(), "HTTP/1.1");
    assert_eq!(b.last_headers()["host"], addr.to_string(), "h2 :authority becomes Host");
    assert!(body.contains("x-forwarded-for: 127.0.0.1"), "{body}");
    // A streamed upload over h2 arrives whole.
    let req = Request::post(format!("http://{addr}/upload")).body(Full::new(Bytes::from(vec![7u8; 300_000]))).unwrap();
    let (status, _, body) = send(&h2_client(), req).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "300000"));
    node.stop().await;
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let b = Backend::start("b").await;
    let node = start_node(&config(&servers(&[(&b, "")]), "[limits]\nmax_header_size = \"16KiB\"")).await;
    let addr = node.addr("http").unwrap();
    let big = "a".repeat(20_000);
    let req = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n");
    let resp = raw(addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    assert_eq!(b.hits(), 0);
    // A request just under the limit passes.
    let ok = "a".repeat(8_000);
    let req = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {ok}\r\nConnection: close\r\n\r\n");
    let resp = raw(addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    node.stop().await;
}

#[tokio::test]
async fn bodies_over_max_body_get_413() {
    let b = Backend::start("b").await;
    let node = start_node(&config(&servers(&[(&b, "")]), "[limits]\nmax_body = \"100KiB\"")).await;
    let addr = node.addr("http").unwrap();
    let c = client();
    // Declared too large: refused before anything is read or sent.
    let req = Request::post(format!("http://{addr}/upload")).body(Full::new(Bytes::from(vec![1u8; 200_000]))).unwrap();
    let (status, _, body) = send(&c, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body.contains("413"), "{body}");
    assert_eq!(b.hits(), 0);
    // Chunked, no length: cut off when the limit is crossed.
    let req = "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(req.as_bytes()).await.unwrap();
    let chunk = vec![b'z'; 32 * 1024];
    for _ in 0..5 {
        let head = format!("{:x}\r\n", chunk.len());
        if stream.write_all(head.as_bytes()).await.is_err() {
            break;
        }
        if stream.write_all(&chunk).await.is_err() || stream.write_all(b"\r\n").await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let resp = read_until_close(&mut stream, Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    // Within the limit: fine.
    let req = Request::post(format!("http://{addr}/upload")).body(Full::new(Bytes::from(vec![1u8; 90_000]))).unwrap();
    assert_eq!(send(&c, req).await.2, "90000");
    node.stop().await;
}

#[tokio::test]
async fn a_client_sending_headers_byte_by_byte_is_cut_off_at_header_timeout() {
    let b = Backend::start("b").await;
    let node = start_node(&config(&servers(&[(&b, "")]), "[limits]\nheader_timeout = \"1s\"")).await;
    let addr = node.addr("http").unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = b"GET / HTTP/1.1\r\nHost: slow.example\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let start = Instant::now();
    let mut closed_after = None;
    for byte in head.iter() {
        if stream.write_all(&[*byte]).await.is_err() {
            closed_after = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A closed socket shows up as a failed write or a read of 0.
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), tokio::io::AsyncReadExt::read(&mut stream, &mut probe)).await
        {
            closed_after = Some(start.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("the slow client was never cut off");
    assert!(closed_after >= Duration::from_millis(900), "cut off too early: {closed_after:?}");
    assert!(closed_after < Duration::from_secs(3), "cut off too late: {closed_after:?}");
    assert_eq!(b.hits(), 0);
    node.stop().await;
}

#[tokio::test]
async fn idle_keepalive_connections_close_after_keepalive_timeout() {
    let b = Backend::start("b").await;
    let node =
        start_node(&config(&servers(&[(&b, "")]), "[limits]\nkeepalive_timeout = \"1s\"\nheader_timeout = \"5s\""))
            .await;
    let addr = node.addr("http").unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let start = Instant::now();
    let resp = read_until_close(&mut stream, Duration::from_secs(5)).await;
    let elapsed = start.elapsed();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3), "closed after {elapsed:?}");
    node.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_400_and_the_node_keeps_serving() {
    let b = Backend::start("b").await;
    let node = start_node(&config(&servers(&[(&b, "")]), "")).await;
    let addr = node.addr("http").unwrap();
    let malformed = || {
        sysmanage_node::metrics::COUNTERS
            .malformed
            .iter()
            .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
            .sum::<u64>()
    };
    let before = malformed();
    const HEAD: &str = "400 Bad Request: malformed request head\n";
    const LENGTH: &str = "400 Bad Request: invalid Content-Length\n";
    for (bad, text) in [
        (&b"GARBAGE\r\n\r\n"[..], HEAD),
        (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n", LENGTH),
        (b"GET / HTTP/1.1\r\nBad Header Name: x\r\n\r\n", HEAD),
        (b"GET / HTTP/9.9\r\n\r\n", HEAD),
        (b"\x00\x01\x02\x03\r\n\r\n", HEAD),
        (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", LENGTH),
    ] {
        let resp = raw(addr, bad, Duration::from_secs(5)).await;
        assert!(resp.starts_with("HTTP/1.1 400 "), "{bad:?} -> {resp:?}");
        // A short plain-text answer, and the connection closed after it.
        assert!(resp.contains("\r\ncontent-type: text/plain"), "{bad:?} -> {resp:?}");
        assert!(resp.contains("\r\nconnection: close\r\n"), "{bad:?} -> {resp:?}");
        assert!(resp.ends_with(&format!("\r\n\r\n{text}")), "{bad:?} -> {resp:?}, want {text:?}");
    }
    // Counted (other tests of this binary may add to it).
    assert!(malformed() - before >= 6, "malformed requests not counted");
    let text = scrape(&node).await;
    let head = metric(&text, "sysmanage_malformed_requests_total{reason=\"head\"}");
    let length = metric(&text, "sysmanage_malformed_requests_total{reason=\"content_length\"}");
    assert!(head.is_some_and(|n| n >= 4.0), "reason=head: {head:?}");
    assert!(length.is_some_and(|n| n >= 2.0), "reason=content_length: {length:?}");
    assert_eq!(b.hits(), 0);
    assert_eq!(get(&client(), addr, "/").await.0, StatusCode::OK);

    // Refused by hyper rather than the fast path: a head too long for the
    // fast path's buffer (431), and a second request on a connection hyper
    // already serves (a POST first) with a list for a length. Both are
    // counted too.
    let too_large =
        || async { metric(&scrape(&node).await, "sysmanage_malformed_requests_total{reason=\"too_large\"}") };
    let by_hyper = || async { metric(&scrape(&node).await, "sysmanage_malformed_requests_total{reason=\"hyper\"}") };
    let (large_before, hyper_before) = (too_large().await.unwrap(), by_hyper().await.unwrap());
    let big = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
    assert!(raw(addr, big.as_bytes(), Duration::from_secs(5)).await.starts_with("HTTP/1.1 431"));
    let two = "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nokPOST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2, 2\r\n\r\nok";
    let resp = raw(addr, two.as_bytes(), Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 200") && resp.contains("HTTP/1.1 400"), "{resp}");
    wait_until(Duration::from_secs(2), "hyper's refusals are counted", || async {
        too_large().await > Some(large_before) && by_hyper().await > Some(hyper_before)
    })
    .await;
    node.stop().await;
}

#[tokio::test]
async fn static_files_fixed_responses_and_redirects() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("static");
    std::fs::create_dir_all(root.join("css")).unwrap();
    std::fs::write(root.join("app.js"), "console.log(1)").unwrap();
    std::fs::write(root.join("css/site.css"), "body{}").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "top secret").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("link.txt")).unwrap();
    let b = Backend::start("b").await;
    let extra = respond_route("health", "/health", 200, "healthy\n")
        + &format!(
            r#"
[[routes]]
name = "static"
path_prefix = "/static/"
static_dir = "{}"
cache_control = "public, max-age=31536000, immutable"

[[routes]]
name = "old"
path_prefix = "/old/"
redirect = {{ to = "https://new.example$request_uri", status = 301 }}
"#,
            root.display()
        );
    let node = start_node(&config(&servers(&[(&b, "")]), &extra)).await;
    let addr = node.addr("http").unwrap();
    let c = client();
    let (status, _, body) = get(&c, addr, "/health").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "healthy\n"));
    let (status, headers, body) = get(&c, addr, "/static/app.js").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "console.log(1)"));
    assert_eq!(headers["cache-control"], "public, max-age=31536000, immutable");
    assert!(headers["content-type"].to_str().unwrap().contains("javascript"));
    assert_eq!(get(&c, addr, "/static/css/site.css").await.2, "body{}");
    assert_eq!(get(&c, addr, "/static/missing.js").await.0, StatusCode::NOT_FOUND);
    // Traversal, raw so no client normalises the path. Dot segments are
    // resolved before routing (as nginx does): `/static/../secret.txt` is
    // `/secret.txt`, which the default route sends to the backend; an
    // encoded slash is refused; a symlink out of the directory is 403.
    for (path, status) in [
        ("/static/../secret.txt", "HTTP/1.1 200"),
        ("/static/%2e%2e/secret.txt", "HTTP/1.1 200"),
        ("/static/css/..%2f..%2fsecret.txt", "HTTP/1.1 400"),
        ("/static/link.txt", "HTTP/1.1 403"),
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let resp = raw(addr, req.as_bytes(), Duration::from_secs(5)).await;
        assert!(resp.starts_with(status), "{path} -> {resp}");
        assert!(!resp.contains("top secret"));
    }
    let req = Request::post(format!("http://{addr}/static/app.js")).body(Full::new(Bytes::new())).unwrap();
    assert_eq!(send(&c, req).await.0, StatusCode::METHOD_NOT_ALLOWED);
    let (status, headers, _) = get(&c, addr, "/old/page?q=1").await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(headers["location"], "https://new.example/old/page?q=1");
    assert_eq!(b.hits(), 2, "only the two normalised paths reached the backend");
    node.stop().await;
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled_and_closed_without_answer_when_no_server() {
    // The backend answers 101 and then echoes bytes.
    let ws_addr = upgrade_server(|mut s| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    })
    .await;
    let toml = NodeToml::new()
        .without_admin()
        .listener("http", "")
        .pool("agents", &format!("servers = [{{ addr = \"{ws_addr}\" }}]"))
        .pool("dead", "retries = 0\nservers = [{ addr = \"127.0.0.1:1\" }]")
        .route("agents", "/api/agent/connect", "agents", "websocket = true")
        .route("dead", "/dead", "dead", "websocket = true")
        .to_string();
    let node = start_node(&toml).await;
    let addr = node.addr("http").unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /api/agent/connect?token=abc HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    s.write_all(b"ping-frame").await.unwrap();
    let mut got = vec![0u8; 10];
    tokio::io::AsyncReadExt::read_exact(&mut s, &mut got).await.unwrap();
    assert_eq!(&got, b"ping-frame");

    // No server: the connection closes with no status line at all.
    let resp = raw(
        addr,
        b"GET /dead HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(resp, "", "an Upgrade with no server must get no HTTP answer");
    // An open tunnel holds shutdown (up to shutdown_timeout); the agent leaves first.
    drop(s);
    node.stop().await;
}

#[tokio::test]
async fn a_server_that_stops_reading_hits_send_timeout() {
    // Reads the request head, then never reads again.
    let addr = raw_server(|s| async move {
        let _keep = s;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let pool =
        format!("send_timeout = \"500ms\"\nread_timeout = \"20s\"\nretries = 0\nservers = [{{ addr = \"{addr}\" }}]");
    let node = start_node(&config(&pool, "[limits]\nmax_body = \"1GiB\"")).await;
    let c: hyper_util::client::legacy::Client<_, Upload> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let req = Request::post(format!("http://{}/upload", node.addr("http").unwrap()))
        .body(Upload { remaining: 512 << 20, chunk: Bytes::from(vec![b'u'; 256 * 1024]) })
        .unwrap();
    let start = Instant::now();
    // The node answers 504, or cuts the upload; either way well before the 20 s read_timeout.
    let result = tokio::time::timeout(Duration::from_secs(10), c.request(req)).await.expect("no answer within 10 s");
    if let Ok(resp) = result {
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    }
    assert!(start.elapsed() < Duration::from_secs(8), "took {:?}", start.elapsed());
    node.stop().await;
}

#[tokio::test]
async fn a_server_that_stalls_mid_body_is_cut_after_read_timeout() {
    let addr = raw_server(|mut s| async move {
        let mut buf = [0u8; 4096];
        let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello").await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let pool = format!("read_timeout = \"700ms\"\nretries = 0\nservers = [{{ addr = \"{addr}\" }}]");
    let node = start_node(&config(&pool, "")).await;
    let start = Instant::now();
    let resp = raw(node.addr("http").unwrap(), b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", Duration::from_secs(10)).await;
    let elapsed = start.elapsed();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.ends_with("hello"), "{resp}");
    assert!(elapsed >= Duration::from_millis(600) && elapsed < Duration::from_secs(5), "cut after {elapsed:?}");
    node.stop().await;
}

#[tokio::test]
async fn a_slow_steady_upload_is_not_a_server_timeout() {
    let b = Backend::start("b").await;
    let pool = format!("read_timeout = \"300ms\"\nretries = 0\n{}", servers(&[(&b, "")]));
    let node = start_node(&config(&pool, "")).await;
    let c: hyper_util::client::legacy::Client<_, Paced> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    // 20 chunks of 100 KiB, one per 60 ms: 1.2 s of sending, 4x read_timeout.
    let req = Request::post(format!("http://{}/upload", node.addr("http").unwrap()))
        .body(Paced::new(20, 100 * 1024, Duration::from_millis(60)))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    assert_eq!(body, (20 * 100 * 1024).to_string().as_bytes());
    node.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_sending_its_body_gets_408_after_body_timeout() {
    let b = Backend::start("b").await;
    let node = start_node(&config(&servers(&[(&b, "")]), "[limits]\nbody_timeout = \"500ms\"")).await;
    let addr = node.addr("http").unwrap();
    // Small body (kept for retries) and large body (streamed): both paths.
    for declared in [100u64, 10 << 20] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {declared}\r\n\r\nonly-a-little");
        s.write_all(head.as_bytes()).await.unwrap();
        let start = Instant::now();
        let resp = read_until_close(&mut s, Duration::from_secs(5)).await;
        let elapsed = start.elapsed();
        assert!(resp.starts_with("HTTP/1.1 408"), "declared {declared}: {resp}");
        assert!(elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(3), "{elapsed:?}");
    }
    node.stop().await;
}

#[tokio::test]
async fn a_keepalive_client_of_fixed_responses_is_not_cut_at_header_timeout() {
    let b = Backend::start("b").await;
    let extra = "[limits]\nheader_timeout = \"1s\"\nkeepalive_timeout = \"5s\"\n\n[[routes]]\nname = \"health\"\npath = \"/health\"\nrespond = { status = 200, body = \"healthy\\n\" }";
    let node = start_node(&config(&servers(&[(&b, "")]), extra)).await;
    let mut s = tokio::net::TcpStream::connect(node.addr("http").unwrap()).await.unwrap();
    // Eight requests 300 ms apart: 2.4 s on one connection, well past header_timeout.
    for i in 0..8 {
        s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(2), tokio::io::AsyncReadExt::read(&mut s, &mut buf))
            .await
            .expect("answer in time")
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("healthy\n"), "request {i}: {text:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    node.stop().await;
}

#[tokio::test]
async fn send_proxy_protocol_puts_the_client_on_each_server_connection() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    for version in ["v1", "v2"] {
        let accepted = Arc::new(AtomicU64::new(0));
        let acc = accepted.clone();
        // Echoes the bytes that came before the HTTP request line.
        let addr = raw_server(move |mut s| {
            let acc = acc.clone();
            async move {
                acc.fetch_add(1, Ordering::SeqCst);
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                // (The v2 signature itself starts with \r\n\r\n: wait for the
                // end of the request head after "GET ".)
                let head_done = |g: &[u8]| {
                    g.windows(4).position(|w| w == b"GET ").is_some_and(|i| g[i..].windows(4).any(|w| w == b"\r\n\r\n"))
                };
                while !head_done(&got) {
                    match tokio::io::AsyncReadExt::read(&mut s, &mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let start = got.windows(4).position(|w| w == b"GET ").unwrap_or(0);
                let prefix: String = got[..start].iter().map(|b| format!("{b:02x}")).collect();
                let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{prefix}", prefix.len());
                let _ = s.write_all(resp.as_bytes()).await;
            }
        })
        .await;
        let pool = format!("send_proxy_protocol = \"{version}\"\nservers = [{{ addr = \"{addr}\" }}]");
        let node = start_node(&config(&pool, "")).await;
        let node_addr = node.addr("http").unwrap();
        let c = client();
        let (status, _, hex) = get(&c, node_addr, "/").await;
        assert_eq!(status, StatusCode::OK);
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        if version == "v1" {
            let line = String::from_utf8(bytes).unwrap();
            assert!(line.starts_with("PROXY TCP4 127.0.0.1 127.0.0.1 "), "{line:?}");
            assert!(line.ends_with(&format!(" {}\r\n", node_addr.port())), "{line:?}");
        } else {
            assert_eq!(&bytes[..12], b"\r\n\r\n\0\r\nQUIT\n", "v2 signature");
            assert_eq!(bytes[12], 0x21, "v2 PROXY command");
        }
        // Connections carrying a client's address are not reused for others.
        get(&c, node_addr, "/").await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "{version}: one server connection per client connection");
        node.stop().await;
    }
}

#[tokio::test]
async fn health_checks_send_the_proxy_header_the_pool_sends() {
    // A server that requires the v1 header: it answers only a connection
    // that starts with one naming the connection's own addresses.
    let checked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = checked.clone();
    let addr = raw_server(move |mut s| {
        let seen = seen.clone();
        async move {
            let (peer, local) = (s.peer_addr().unwrap(), s.local_addr().unwrap());
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match tokio::io::AsyncReadExt::read(&mut s, &mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&got).to_string();
            let expected = format!("PROXY TCP4 {} {} {} {}\r\n", peer.ip(), local.ip(), peer.port(), local.port());
            let ok = text.starts_with(&expected) && text[expected.len()..].starts_with("GET /health HTTP/1.1\r\n");
            seen.lock().unwrap().push(text);
            let resp: &[u8] = if ok {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            } else {
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            };
            let _ = s.write_all(resp).await;
        }
    })
    .await;
    let pool = format!(
        "send_proxy_protocol = \"v1\"\n\
         checks = [{{ path = \"/health\", interval = \"100ms\", timeout = \"1s\", fall = 1, rise = 1 }}]\n\
         servers = [{{ addr = \"{addr}\" }}]"
    );
    let node = start_node(&config(&pool, "")).await;
    let admin = node.admin.unwrap();
    wait_until(Duration::from_secs(5), "three passed checks", || async {
        let (_, _, body) = get(&client(), admin, "/api/v1/status").await;
        let s: sysmanage_node::api::Status = serde_json::from_str(&body).unwrap();
        s.pools[0].servers[0].checks_ok >= 3
    })
    .await;
    let (_, _, body) = get(&client(), admin, "/api/v1/status").await;
    let s: sysmanage_node::api::Status = serde_json::from_str(&body).unwrap();
    assert_eq!((s.pools[0].servers[0].checks_failed, s.pools[0].servers[0].state.as_str()), (0, "up"));
    assert!(checked.lock().unwrap().iter().all(|t| t.starts_with("PROXY TCP4 127.0.0.1 127.0.0.1 ")));
    node.stop().await;
}

/// One HTTP/1.1 response read off a raw connection; bytes after it stay in
/// `buf` for the next one.
async fn next_response(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>, head_request: bool) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 16384];
    let deadline = Duration::from_secs(5);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(deadline, s.read(&mut chunk)).await.expect("no response").unwrap();
        assert!(n > 0, "closed before a response head; got {:?}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no content-length in {head:?}"));
    let length = if head_request { 0 } else { length };
    while buf.len() < head_end + length {
        let n = tokio::time::timeout(deadline, s.read(&mut chunk)).await.expect("body stalled").unwrap();
        assert!(n > 0, "closed in the middle of a body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    (head, body)
}

#[tokio::test]
async fn one_connection_mixes_fast_path_and_hyper_requests() {
    use tokio::io::AsyncReadExt;
    let b = Backend::start("b").await;
    let node = start_node(&config(&servers(&[(&b, "")]), "")).await;
    let mut s = tokio::net::TcpStream::connect(node.addr("http").unwrap()).await.unwrap();
    let mut buf = Vec::new();
    let get = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n";

    // A plain GET (the fast path).
    s.write_all(get).await.unwrap();
    let (head, body) = next_response(&mut s, &mut buf, false).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\ndate: "), "{head}");
    assert_eq!(body, b"b");
    // A POST with a body (hyper), then a GET again.
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello").await.unwrap();
    assert_eq!(next_response(&mut s, &mut buf, false).await.1, b"5");
    s.write_all(get).await.unwrap();
    assert_eq!(next_response(&mut s, &mut buf, false).await.1, b"b");
    // A head in two pieces.
    s.write_all(&get[..9]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    s.write_all(&get[9..]).await.unwrap();
    assert_eq!(next_response(&mut s, &mut buf, false).await.1, b"b");
    // Two pipelined requests in one write: two answers, in order.
    s.write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /download?n=3 HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    assert_eq!(next_response(&mut s, &mut buf, false).await.1, b"b");
    assert_eq!(next_response(&mut s, &mut buf, false).await.1, b"xxx");
    // HEAD: a length, no body.
    s.write_all(b"HEAD /a HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let (head, body) = next_response(&mut s, &mut buf, true).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("content-length: 1\r\n"), "{head}");
    assert!(body.is_empty());
    // A streamed body of several frames, through the fast path.
    s.write_all(b"GET /download?n=300000 HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let body = next_response(&mut s, &mut buf, false).await.1;
    assert_eq!(body.len(), 300_000);
    assert!(body.iter().all(|c| *c == b'x'));
    // Connection: close is honoured (hyper), and nothing is left over.
    s.write_all(b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await.unwrap();
    let (head, body) = next_response(&mut s, &mut buf, false).await;
    assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
    assert_eq!(body, b"b");
    let mut rest = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut rest)).await.expect("not closed").unwrap();
    assert_eq!((n, buf.len()), (0, 0), "bytes after the last response");
    assert_eq!(b.hits(), 9);
    node.stop().await;
}

/// A server that reads a request, writes `answer` (nothing, or the start
/// of a response), never finishes, and reports on `tx` when the request
/// came and when the node closed the connection.
async fn stalling_server(
    answer: &'static [u8],
    tx: tokio::sync::mpsc::UnboundedSender<&'static str>,
) -> std::net::SocketAddr {
    use tokio::io::AsyncReadExt;
    raw_server(move |mut s| {
        let tx = tx.clone();
        async move {
            let mut buf = [0u8; 4096];
            if !matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                return;
            }
            let _ = tx.send("request");
            let _ = s.write_all(answer).await;
            let after = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
            let _ = tx.send(match after {
                Ok(Ok(0)) | Ok(Err(_)) => "closed",
                Ok(Ok(_)) => "more bytes",
                Err(_) => "still open",
            });
        }
    })
    .await
}

#[tokio::test]
async fn a_client_that_leaves_mid_request_ends_the_server_exchange() {
    // Before the answer, and in the middle of a streamed body.
    for answer in [&b""[..], b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello"] {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
        let addr = stalling_server(answer, tx).await;
        let pool = format!("read_timeout = \"30s\"\nretries = 0\nservers = [{{ addr = \"{addr}\" }}]");
        let node = start_node(&config(&pool, "")).await;
        // The fast path's request, and one hyper serves (a Connection field).
        for req in [
            &b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"[..],
            b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\n\r\n",
        ] {
            let mut c = tokio::net::TcpStream::connect(node.addr("http").unwrap()).await.unwrap();
            c.write_all(req).await.unwrap();
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap();
            assert_eq!(got, Some("request"));
            if !answer.is_empty() {
                // The start of the body reached the client.
                let mut seen = Vec::new();
                while !seen.ends_with(b"hello") {
                    let mut b = [0u8; 512];
                    let n = tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut c, &mut b))
                        .await
                        .unwrap()
                        .unwrap();
                    assert!(n > 0);
                    seen.extend_from_slice(&b[..n]);
                }
            }
            let left = Instant::now();
            drop(c);
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap();
            let what = (String::from_utf8_lossy(answer), String::from_utf8_lossy(req));
            assert_eq!(got, Some("closed"), "{what:?}");
            assert!(left.elapsed() < Duration::from_secs(2), "closed after {:?}: {what:?}", left.elapsed());
        }
        node.stop().await;
    }
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_connection_that_never_sent_a_request() {
    let b = Backend::start("b").await;
    let node = start_node(&config(&servers(&[(&b, "")]), "[limits]\nheader_timeout = \"30s\"")).await;
    let addr = node.addr("http").unwrap();
    // Connected, never sends a byte (as a client's spare keep-alive
    // connection may): the node waits for its first bytes.
    let silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    wait_until(Duration::from_secs(5), "the node accepted the silent connection", || async {
        sysmanage_node::metrics::COUNTERS.active_connections.load(std::sync::atomic::Ordering::Relaxed) > 0
    })
    .await;
    // It must not hold the drain until its header_timeout (30 s here) or
    // the shutdown_timeout runs out.
    tokio::time::timeout(Duration::from_secs(5), node.stop())
        .await
        .expect("shutdown waited for a connection that never sent a request");
    drop(silent);
}
