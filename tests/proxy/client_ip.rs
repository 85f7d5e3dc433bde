//! Who the client is and where it is sent, through a real node: the PROXY
//! protocol (v1, v2, malformed, missing), `trusted_proxies` and
//! `X-Forwarded-For`, `source_hash` on the real client IP, and the
//! plain-HTTP listener's `redirect_to_https`.

use crate::support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;
use sysmanage_node::proxy_protocol::{encode_v1, encode_v2};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

/// GET `path` with extra header lines, on a fresh connection closed after.
async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut req = Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (status, _, body) = send(&client(), req.body(Full::new(Bytes::new())).unwrap()).await;
    (status, body)
}

// ---- PROXY protocol ----

/// Writes `prefix` then an HTTP request on a new connection; the whole
/// answer up to the close, or `None` if the node kept the connection open.
async fn exchange(addr: SocketAddr, prefix: &[u8], request: &[u8]) -> Option<String> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(request);
    // The node may close after reading the bad start; a failed write is fine.
    let _ = tcp.write_all(&bytes).await;
    read_to_close(&mut tcp, WAIT).await.map(|b| String::from_utf8_lossy(&b).into_owned())
}

const REQUEST: &[u8] = b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn proxy_protocol_v1_and_v2_set_the_client_address() {
    let b = Backend::start("b").await;
    let node =
        start_node(&config_listeners(&listener("http", "accept_proxy_protocol = true"), &servers(&[(&b, "")]), "", ""))
            .await;
    let addr = node.addr("http").unwrap();
    for (header, want) in [
        (encode_v1("203.0.113.7:51234".parse().unwrap(), addr), "203.0.113.7"),
        (encode_v2("198.51.100.9:40000".parse().unwrap(), addr), "198.51.100.9"),
        (encode_v2("[2001:db8::7]:40000".parse().unwrap(), "[2001:db8::1]:443".parse().unwrap()), "2001:db8::7"),
        (encode_v1("[2001:db8::8]:40000".parse().unwrap(), "[2001:db8::1]:443".parse().unwrap()), "2001:db8::8"),
        // An IPv4 client behind an IPv6 hop: TCP6 with ::ffff:a.b.c.d, still IPv4.
        (encode_v1("203.0.113.10:40000".parse().unwrap(), "[2001:db8::1]:443".parse().unwrap()), "203.0.113.10"),
        (encode_v2("203.0.113.11:40000".parse().unwrap(), "[2001:db8::1]:443".parse().unwrap()), "203.0.113.11"),
    ] {
        let resp = exchange(addr, &header, REQUEST).await.expect("connection closed after the response");
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let seen = b.last_headers();
        assert_eq!(seen["x-real-ip"], want);
        assert_eq!(seen["x-forwarded-for"], want);
    }
    // v1 UNKNOWN and v2 LOCAL carry no address: the TCP peer is the client.
    let mut local = encode_v2("10.0.0.1:1".parse().unwrap(), addr);
    local[12] = 0x20; // version 2, command LOCAL
    for header in [b"PROXY UNKNOWN\r\n".to_vec(), local] {
        let resp = exchange(addr, &header, REQUEST).await.expect("closed");
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert_eq!(b.last_headers()["x-real-ip"], "127.0.0.1");
    }
    assert_eq!(b.hits(), 8);
    node.stop().await;
}

#[tokio::test]
async fn a_malformed_or_missing_proxy_header_closes_the_connection_without_a_response() {
    let b = Backend::start("b").await;
    let node =
        start_node(&config_listeners(&listener("http", "accept_proxy_protocol = true"), &servers(&[(&b, "")]), "", ""))
            .await;
    let addr = node.addr("http").unwrap();
    let mut bad_v2 = encode_v2("198.51.100.9:40000".parse().unwrap(), addr);
    bad_v2[12] = 0x31; // version 3
    for prefix in [
        &b"PROXY TCP4 203.0.113.7 nonsense 1 2\r\n"[..],
        b"PROXY TCP4 203.0.113.7 127.0.0.1 99999 80\r\n",
        b"PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n",
        &bad_v2,
        b"", // no header at all: a plain HTTP request
    ] {
        let resp = exchange(addr, prefix, REQUEST).await;
        let resp = resp.unwrap_or_else(|| panic!("{:?}: connection left open", prefix.escape_ascii().to_string()));
        assert!(resp.is_empty(), "{:?} got an answer: {resp}", prefix.escape_ascii().to_string());
    }
    assert_eq!(b.hits(), 0);
    // Still serving.
    let header = encode_v1("203.0.113.7:51234".parse().unwrap(), addr);
    assert!(exchange(addr, &header, REQUEST).await.expect("closed").starts_with("HTTP/1.1 200"));
    node.stop().await;
}

#[tokio::test]
async fn a_client_that_never_sends_the_proxy_header_is_cut_off_at_header_timeout() {
    let b = Backend::start("b").await;
    let cfg = config_listeners(
        &listener("http", "accept_proxy_protocol = true"),
        &servers(&[(&b, "")]),
        "[limits]\nheader_timeout = \"500ms\"",
        "",
    );
    let node = start_node(&cfg).await;
    let mut tcp = TcpStream::connect(node.addr("http").unwrap()).await.unwrap();
    tcp.write_all(b"PROXY TCP4 1.2.").await.unwrap();
    let started = std::time::Instant::now();
    let resp = read_to_close(&mut tcp, Duration::from_secs(4)).await.expect("half a header held the connection");
    let after = started.elapsed();
    assert!(resp.is_empty());
    assert!(after >= Duration::from_millis(400) && after < Duration::from_secs(3), "cut off after {after:?}");
    node.stop().await;
}

// ---- X-Forwarded-For and trusted proxies ----

#[tokio::test]
async fn forwarded_for_is_ignored_from_untrusted_clients_and_used_behind_trusted_proxies() {
    let b = Backend::start("b").await;
    let untrusted = start_node(&config(&servers(&[(&b, "")]), "")).await;
    let (status, _) = get_with(untrusted.addr("http").unwrap(), "/", &[("x-forwarded-for", "1.2.3.4")]).await;
    assert_eq!(status, StatusCode::OK);
    let seen = b.last_headers();
    assert_eq!(seen["x-real-ip"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    untrusted.stop().await;

    let trusted = start_node(&config_listeners(
        &listener("http", "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]"),
        &servers(&[(&b, "")]),
        "",
        "",
    ))
    .await;
    let addr = trusted.addr("http").unwrap();
    for (xff, real, passed_on) in [
        // One proxy (us, the peer) in front of the client.
        ("1.2.3.4", "1.2.3.4", "1.2.3.4, 127.0.0.1"),
        // A chain: the right-most address that is not a trusted proxy wins;
        // what the client wrote further left cannot override it.
        ("6.6.6.6, 1.2.3.4, 10.0.0.5", "1.2.3.4", "6.6.6.6, 1.2.3.4, 10.0.0.5, 127.0.0.1"),
        // Garbage entries are skipped.
        ("1.2.3.4, not-an-ip", "1.2.3.4", "1.2.3.4, not-an-ip, 127.0.0.1"),
        // Only trusted proxies in the chain: the left-most of them.
        ("10.0.0.9, 10.0.0.5", "10.0.0.9", "10.0.0.9, 10.0.0.5, 127.0.0.1"),
        ("2001:db8::5", "2001:db8::5", "2001:db8::5, 127.0.0.1"),
    ] {
        let (status, _) = get_with(addr, "/", &[("x-forwarded-for", xff)]).await;
        assert_eq!(status, StatusCode::OK);
        let seen = b.last_headers();
        assert_eq!(seen["x-real-ip"], real, "XFF {xff}");
        assert_eq!(seen["x-forwarded-for"], passed_on, "XFF {xff}");
    }
    // No X-Forwarded-For from a trusted proxy: the proxy itself is the client.
    get_with(addr, "/", &[]).await;
    assert_eq!(b.last_headers()["x-real-ip"], "127.0.0.1");
    assert_eq!(b.last_headers()["x-forwarded-for"], "127.0.0.1");
    trusted.stop().await;
}

#[tokio::test]
async fn trusted_proxies_apply_to_the_proxy_protocol_source() {
    // The PROXY header says the connection comes from 10.1.1.1 (a trusted
    // proxy), whose X-Forwarded-For then names the client.
    let b = Backend::start("b").await;
    let attrs = "accept_proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\"]";
    let node = start_node(&config_listeners(&listener("http", attrs), &servers(&[(&b, "")]), "", "")).await;
    let addr = node.addr("http").unwrap();
    let header = encode_v1("10.1.1.1:5000".parse().unwrap(), addr);
    let req = b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 192.0.2.44\r\nConnection: close\r\n\r\n";
    assert!(exchange(addr, &header, req).await.expect("closed").starts_with("HTTP/1.1 200"));
    assert_eq!(b.last_headers()["x-real-ip"], "192.0.2.44");
    assert_eq!(b.last_headers()["x-forwarded-for"], "192.0.2.44, 10.1.1.1");
    // An untrusted PROXY source: its X-Forwarded-For is ignored.
    let header = encode_v1("203.0.113.50:5000".parse().unwrap(), addr);
    assert!(exchange(addr, &header, req).await.expect("closed").starts_with("HTTP/1.1 200"));
    assert_eq!(b.last_headers()["x-real-ip"], "203.0.113.50");
    assert_eq!(b.last_headers()["x-forwarded-for"], "203.0.113.50");
    node.stop().await;
}

/// The servers `source_hash` picks for each of these client IPs, sent as
/// `X-Forwarded-For` from the one loopback address.
async fn picks(addr: SocketAddr, clients: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for ip in clients {
        let (status, body) = get_with(addr, "/", &[("x-forwarded-for", ip)]).await;
        assert_eq!(status, StatusCode::OK);
        out.push(body);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_hash_balances_on_the_real_client_ip() {
    let backends = [Backend::start("a").await, Backend::start("b").await, Backend::start("c").await];
    let all: Vec<(&Backend, &str)> = backends.iter().map(|b| (b, "")).collect();
    let pool = format!("balance = \"source_hash\"\n{}", servers(&all));
    let clients: Vec<String> = (1..=40).map(|i| format!("192.0.2.{i}")).collect();

    let trusted =
        start_node(&config_listeners(&listener("http", "trusted_proxies = [\"127.0.0.1\"]"), &pool, "", "")).await;
    let addr = trusted.addr("http").unwrap();
    let first = picks(addr, &clients).await;
    // Each client keeps its server...
    assert_eq!(picks(addr, &clients).await, first, "a client moved between servers");
    // ...and the clients spread over the servers though all came from 127.0.0.1.
    let used: HashSet<&String> = first.iter().collect();
    assert_eq!(used.len(), 3, "40 clients on {used:?}");
    trusted.stop().await;

    // Control: without trusted proxies the header is ignored, so everything
    // hashes on 127.0.0.1 and lands on one server.
    let untrusted = start_node(&config(&pool, "")).await;
    let picked = picks(untrusted.addr("http").unwrap(), &clients).await;
    let used: HashSet<&String> = picked.iter().collect();
    assert_eq!(used.len(), 1, "{used:?}");
    untrusted.stop().await;
}

// ---- redirect_to_https ----

#[tokio::test]
async fn plain_listener_redirects_to_https_keeping_host_path_and_query() {
    let b = Backend::start("b").await;
    let listeners = listener("http", "redirect_to_https = 443")
        + &listener("alt", "redirect_to_https = 8443\nredirect_except = [\"/healthz\"]");
    let routes = respond_route("health", "/health", 200, "ok") + &respond_route("healthz", "/healthz", 200, "okz");
    let node = start_node(&config_listeners(&listeners, &servers(&[(&b, "")]), &routes, "")).await;
    let addr = node.addr("http").unwrap();
    let alt = node.addr("alt").unwrap();

    let redirect = |addr: SocketAddr, method: &'static str, host: &'static str, path: &'static str| async move {
        let req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let resp = raw(addr, req.as_bytes(), WAIT).await;
        let status = resp.get(9..12).unwrap_or("").to_string();
        let location = resp
            .lines()
            .find_map(|l| l.strip_prefix("location: ").or_else(|| l.strip_prefix("Location: ")))
            .map(str::to_string);
        (status, location, resp)
    };

    let (status, location, resp) = redirect(addr, "GET", "example.com", "/a/b?x=1").await;
    assert_eq!((status.as_str(), location.as_deref()), ("301", Some("https://example.com/a/b?x=1")), "{resp}");
    assert!(!resp.to_ascii_lowercase().contains("strict-transport-security"), "HSTS over plain HTTP: {resp}");
    let (status, location, _) = redirect(addr, "HEAD", "example.com:8080", "/").await;
    assert_eq!((status.as_str(), location.as_deref()), ("301", Some("https://example.com/")));
    // Other methods keep method and body: 308.
    for method in ["POST", "PUT", "DELETE"] {
        let (status, location, _) = redirect(addr, method, "example.com", "/api/x?y=2").await;
        assert_eq!((status.as_str(), location.as_deref()), ("308", Some("https://example.com/api/x?y=2")), "{method}");
    }
    // A non-default port is written out; IPv6 literals keep their brackets.
    let (status, location, _) = redirect(alt, "GET", "example.com", "/a/b?x=1").await;
    assert_eq!((status.as_str(), location.as_deref()), ("301", Some("https://example.com:8443/a/b?x=1")));
    let (_, location, _) = redirect(alt, "GET", "[2001:db8::1]:8080", "/p").await;
    assert_eq!(location.as_deref(), Some("https://[2001:db8::1]:8443/p"));

    // /health is not redirected by default (load balancer checks over HTTP);
    // redirect_except replaces the default list.
    let (status, body) = get_with(addr, "/health", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    let (status, body) = get_with(alt, "/healthz", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "okz"));
    let (status, location, _) = redirect(alt, "GET", "example.com", "/health").await;
    assert_eq!((status.as_str(), location.as_deref()), ("301", Some("https://example.com:8443/health")));
    // Exact paths only: /health/x is redirected.
    let (status, _, _) = redirect(addr, "GET", "example.com", "/health/x").await;
    assert_eq!(status, "301");
    assert_eq!(b.hits(), 0, "a redirected request reached the backend");
    node.stop().await;
}
