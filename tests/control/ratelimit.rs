//! `[[rate_limits]]` zones on routes through a real node: bucket and window
//! zones, Retry-After, the configured status, header- and client-IP keys,
//! the per-zone metric, and zone state across a reload.
//!
//! Timing: bucket zones refill on real time. Checks that depend on it leave
//! 100 ms or more of slack (a burst sent at once into a 200 ms interval;
//! back-to-back requests and a 600 ms sleep around a 500 ms interval).

use crate::support;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::Full;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A node whose zones and routes are `zones_and_routes` (routes before the
/// default one), on a listener with these extra attributes.
async fn node_with(b: &Backend, listener_attrs: &str, zones_and_routes: &str) -> sysmanage_node::runtime::Node {
    start_node(&config_listeners(&listener("http", listener_attrs), &servers(&[(b, "")]), zones_and_routes, "")).await
}

/// One route `path_prefix = path` to pool "p" limited by `zone`.
fn route(path: &str, zone: &str) -> String {
    format!("[[routes]]\nname = \"{zone}\"\npath_prefix = \"{path}\"\npool = \"p\"\nrate_limit = \"{zone}\"\n")
}

async fn get_h(
    c: &TestClient,
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(c, req.body(Full::new(Bytes::new())).unwrap()).await
}

fn retry_after(headers: &HeaderMap) -> u64 {
    let v = headers.get("retry-after").expect("Retry-After on a refusal");
    v.to_str().unwrap().parse().unwrap_or_else(|_| panic!("Retry-After is not whole seconds: {v:?}"))
}

#[tokio::test]
async fn bucket_zone_passes_burst_plus_one_at_once_then_429_with_retry_after() {
    let b = Backend::start("b").await;
    let zones = format!("[[rate_limits]]\nname = \"auth\"\nrate = \"5/s\"\nburst = 10\n\n{}", route("/auth", "auth"));
    let node = node_with(&b, "", &zones).await;
    let addr = node.addr("http").unwrap();

    // Twelve connections opened first, then twelve requests at once: the
    // node sees them within a few ms, well inside one 200 ms refill.
    let mut conns = Vec::new();
    for _ in 0..12 {
        conns.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut burst = tokio::task::JoinSet::new();
    for mut tcp in conns {
        burst.spawn(async move {
            tcp.write_all(b"GET /auth HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await.unwrap();
            read_until_close(&mut tcp, Duration::from_secs(5)).await
        });
    }
    let answers = burst.join_all().await;
    let passed = answers.iter().filter(|r| r.starts_with("HTTP/1.1 200")).count();
    let refused: Vec<&String> = answers.iter().filter(|r| r.starts_with("HTTP/1.1 429")).collect();
    assert_eq!((passed, refused.len()), (11, 1), "{answers:#?}");
    let refusal = refused[0].to_ascii_lowercase();
    // One request per 200 ms: the next is admitted within a second.
    assert!(refusal.contains("\r\nretry-after: 1\r\n"), "{refusal}");
    assert!(refusal.contains("\r\nx-frame-options: deny\r\n"), "security headers on a refusal too: {refusal}");
    assert_eq!(b.hits(), 11, "a refused request reached the backend");

    // Other routes are not limited.
    let c = client();
    for _ in 0..20 {
        assert_eq!(get_h(&c, addr, "/other", &[]).await.0, StatusCode::OK);
    }
    let metrics = scrape(&node).await;
    assert_eq!(metric(&metrics, "sysmanage_ratelimited_total{zone=\"auth\"}"), Some(1.0), "{metrics}");
    node.stop().await;
}

#[tokio::test]
async fn bucket_zone_admits_again_after_one_interval_and_not_before() {
    let b = Backend::start("b").await;
    let zones = format!("[[rate_limits]]\nname = \"slow\"\nrate = \"2/s\"\n\n{}", route("/slow", "slow"));
    let node = node_with(&b, "", &zones).await;
    let addr = node.addr("http").unwrap();
    let c = client();
    // Burst 0: one request per 500 ms. Back-to-back requests are refused as
    // long as they are under 500 ms apart; after sleeping 600 ms past a
    // refusal (so past the last admission too) one is admitted for sure.
    for round in 0..2 {
        assert_eq!(get_h(&c, addr, "/slow", &[]).await.0, StatusCode::OK, "round {round}");
        let (status, headers, _) = get_h(&c, addr, "/slow", &[]).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "round {round}");
        assert_eq!(retry_after(&headers), 1);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert_eq!(b.hits(), 2);
    node.stop().await;
}

#[tokio::test]
async fn a_zone_answers_with_its_configured_status() {
    let b = Backend::start("b").await;
    let zones = format!("[[rate_limits]]\nname = \"busy\"\nrate = \"1/m\"\nstatus = 503\n\n{}", route("/busy", "busy"));
    let node = node_with(&b, "", &zones).await;
    let addr = node.addr("http").unwrap();
    let c = client();
    assert_eq!(get_h(&c, addr, "/busy", &[]).await.0, StatusCode::OK);
    let (status, headers, body) = get_h(&c, addr, "/busy", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "503 Service Unavailable\n");
    // One request a minute: the next in (59, 60] s.
    assert_eq!(retry_after(&headers), 60);
    assert_eq!(metric(&scrape(&node).await, "sysmanage_ratelimited_total{zone=\"busy\"}"), Some(1.0));
    node.stop().await;
}

#[tokio::test]
async fn a_header_keyed_zone_limits_each_value_on_its_own_and_not_requests_without_it() {
    let b = Backend::start("b").await;
    let zones = format!(
        "[[rate_limits]]\nname = \"agents\"\nrate = \"1/m\"\nburst = 1\nkey = \"header:X-Agent\"\n\n{}",
        route("/agent", "agents")
    );
    let node = node_with(&b, "", &zones).await;
    let addr = node.addr("http").unwrap();
    let c = client();
    for agent in ["host-a", "host-b"] {
        for i in 1..=2 {
            let (status, _, _) = get_h(&c, addr, "/agent", &[("x-agent", agent)]).await;
            assert_eq!(status, StatusCode::OK, "{agent} request {i}");
        }
        let (status, _, _) = get_h(&c, addr, "/agent", &[("x-agent", agent)]).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{agent} request 3");
    }
    // Same client IP throughout, so the key really is the header.
    for _ in 0..5 {
        assert_eq!(get_h(&c, addr, "/agent", &[]).await.0, StatusCode::OK, "no header: not limited");
    }
    assert_eq!(metric(&scrape(&node).await, "sysmanage_ratelimited_total{zone=\"agents\"}"), Some(2.0));
    node.stop().await;
}

#[tokio::test]
async fn a_client_ip_zone_keys_on_the_real_client_behind_a_trusted_proxy() {
    let b = Backend::start("b").await;
    let zones = format!("[[rate_limits]]\nname = \"per_ip\"\nrate = \"1/m\"\n\n{}", route("/login", "per_ip"));
    let node = node_with(&b, "trusted_proxies = [\"127.0.0.1\"]", &zones).await;
    let addr = node.addr("http").unwrap();
    let c = client();
    for ip in ["192.0.2.1", "192.0.2.2"] {
        assert_eq!(get_h(&c, addr, "/login", &[("x-forwarded-for", ip)]).await.0, StatusCode::OK, "{ip}");
        assert_eq!(
            get_h(&c, addr, "/login", &[("x-forwarded-for", ip)]).await.0,
            StatusCode::TOO_MANY_REQUESTS,
            "{ip} again"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn window_zone_passes_its_limit_then_refuses() {
    let b = Backend::start("b").await;
    let zones = format!("[[rate_limits]]\nname = \"win\"\nrequests = 3\nwindow = \"1s\"\n\n{}", route("/w", "win"));
    let node = node_with(&b, "", &zones).await;
    let addr = node.addr("http").unwrap();
    let c = client();
    for i in 1..=3 {
        assert_eq!(get_h(&c, addr, "/w", &[]).await.0, StatusCode::OK, "request {i}");
    }
    let (status, headers, _) = get_h(&c, addr, "/w", &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // The rolling window is estimated from fixed 1 s windows (HAProxy's
    // way): three requests late in one still weigh 2/3 a third of the way
    // into the next, so the wait is between 1/3 s and 4/3 s.
    let wait = retry_after(&headers);
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    assert_eq!(b.hits(), 3);
    assert_eq!(metric(&scrape(&node).await, "sysmanage_ratelimited_total{zone=\"win\"}"), Some(1.0));
    node.stop().await;
}

#[tokio::test]
async fn a_reload_keeps_an_unchanged_zone_state_and_resets_a_changed_one() {
    let b = Backend::start("b").await;
    let zones = |rate: &str| format!("[[rate_limits]]\nname = \"z\"\nrate = \"{rate}\"\n\n{}", route("/z", "z"));
    let (node, _dir, path) = start_node_file(&config(&servers(&[(&b, "")]), &zones("1/m"))).await;
    let addr = node.addr("http").unwrap();
    let c = client();
    assert_eq!(get_h(&c, addr, "/z", &[]).await.0, StatusCode::OK);
    assert_eq!(get_h(&c, addr, "/z", &[]).await.0, StatusCode::TOO_MANY_REQUESTS);

    node.control.reload().await.expect("same config reloads");
    assert_eq!(get_h(&c, addr, "/z", &[]).await.0, StatusCode::TOO_MANY_REQUESTS, "state lost on reload");

    std::fs::write(&path, config(&servers(&[(&b, "")]), &zones("2/m"))).unwrap();
    node.control.reload().await.expect("changed config reloads");
    assert_eq!(get_h(&c, addr, "/z", &[]).await.0, StatusCode::OK, "a changed zone starts afresh");
    node.stop().await;
}
