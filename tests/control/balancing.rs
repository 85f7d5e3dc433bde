//! Balancing, backups, retries and passive health through a real node.

use crate::support;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;

async fn shares(node: std::net::SocketAddr, n: usize) -> HashMap<String, usize> {
    let c = client();
    let mut counts = HashMap::new();
    for _ in 0..n {
        let (status, _, body) = get(&c, node, "/").await;
        assert_eq!(status, StatusCode::OK);
        *counts.entry(body).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_3_3_2_share_within_5_percent_for_each_algorithm() {
    let (a, b, c) = (Backend::start("a").await, Backend::start("b").await, Backend::start("c").await);
    for algo in ["round_robin", "least_conn", "random_two"] {
        let pool =
            format!("balance = \"{algo}\"\n{}", servers(&[(&a, "weight = 3"), (&b, "weight = 3"), (&c, "weight = 2")]));
        let node = start_node(&config(&pool, "")).await;
        let counts = shares(node.addr("http").unwrap(), 8000).await;
        for (name, want) in [("a", 3000.0), ("b", 3000.0), ("c", 2000.0)] {
            let got = counts.get(name).copied().unwrap_or(0) as f64;
            assert!((got - want).abs() <= 0.05 * 8000.0, "{algo}: {name} got {got}, want {want} ±400: {counts:?}");
        }
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_favours_the_server_with_fewer_in_flight_requests() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let pool = format!("balance = \"least_conn\"\n{}", servers(&[(&a, ""), (&b, "")]));
    let node = start_node(&config(&pool, "")).await;
    let addr = node.addr("http").unwrap();
    // Park one request on whichever server gets it.
    let held = tokio::spawn(async move { get(&client(), addr, "/hold").await });
    wait_until(Duration::from_secs(5), "held request reaches a backend", || async { a.hits() + b.hits() == 1 }).await;
    let busy = if a.hits() == 1 { &a } else { &b };
    let idle_name = if a.hits() == 1 { "b" } else { "a" };
    let counts = shares(addr, 100).await;
    assert_eq!(counts.get(idle_name), Some(&100), "{counts:?}");
    busy.state.release.notify_waiters();
    let (status, _, _) = held.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_hash_keeps_clients_and_moves_about_one_nth_when_a_server_leaves() {
    let backends =
        [Backend::start("a").await, Backend::start("b").await, Backend::start("c").await, Backend::start("d").await];
    let all: Vec<(&Backend, &str)> = backends.iter().map(|b| (b, "")).collect();
    let node = start_node(&config(&format!("balance = \"source_hash\"\n{}", servers(&all)), "")).await;
    let addr = node.addr("http").unwrap();
    let req = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let body_of = |resp: String| resp.rsplit("\r\n\r\n").next().unwrap_or("").to_string();
    let ips: Vec<IpAddr> = (2..202).map(|i| IpAddr::from([127, 0, 1, i as u8])).collect();
    let mut first = Vec::new();
    for ip in &ips {
        let a = body_of(raw_from(*ip, addr, req, Duration::from_secs(5)).await);
        let b = body_of(raw_from(*ip, addr, req, Duration::from_secs(5)).await);
        assert_eq!(a, b, "client {ip} moved between requests");
        first.push(a);
    }
    node.stop().await;

    // The same clients with server d gone.
    let three: Vec<(&Backend, &str)> = backends[..3].iter().map(|b| (b, "")).collect();
    let node = start_node(&config(&format!("balance = \"source_hash\"\n{}", servers(&three)), "")).await;
    let addr = node.addr("http").unwrap();
    let mut moved = 0;
    for (ip, before) in ips.iter().zip(&first) {
        let now = body_of(raw_from(*ip, addr, req, Duration::from_secs(5)).await);
        if &now != before {
            assert_eq!(before, "d", "client {ip} moved from a server that stayed");
            moved += 1;
        }
    }
    // About 1/4 of 200 clients were on d.
    assert!((25..=75).contains(&moved), "moved {moved} of 200");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_take_traffic_only_while_every_primary_is_out() {
    let (p1, p2, bk) = (Backend::start("p1").await, Backend::start("p2").await, Backend::start("bk").await);
    let pool = format!(
        "max_fails = 1\nfail_timeout = \"1s\"\nretries = 2\n{}",
        servers(&[(&p1, ""), (&p2, ""), (&bk, "backup = true")])
    );
    let node = start_node(&config(&pool, "")).await;
    let addr = node.addr("http").unwrap();
    let counts = shares(addr, 50).await;
    assert_eq!(counts.get("bk"), None, "backup used while primaries are up: {counts:?}");

    p1.set_mode(Mode::Reset);
    p2.set_mode(Mode::Reset);
    // Every request still succeeds: failed primaries are retried on the backup.
    let counts = shares(addr, 30).await;
    assert_eq!(counts.get("bk"), Some(&30), "{counts:?}");

    p1.set_mode(Mode::Ok);
    // After fail_timeout p1 is tried again and, answering, takes the traffic back.
    let c = client();
    wait_until(Duration::from_secs(5), "p1 serves again", || async { get(&c, addr, "/").await.2 == "p1" }).await;
    let counts = shares(addr, 20).await;
    assert_eq!(counts.get("bk"), None, "backup still used after a primary returned: {counts:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_server_causes_no_client_errors_for_gets() {
    for bad_mode in [Mode::Reset, Mode::Status(502)] {
        let (good, bad) = (Backend::start("good").await, Backend::start("bad").await);
        bad.set_mode(bad_mode.clone());
        let pool = format!(
            "retries = 2\nretry_on = [\"error\", \"timeout\", \"http_502\"]\nmax_fails = 1000\n{}",
            servers(&[(&good, ""), (&bad, "")])
        );
        let node = start_node(&config(&pool, "")).await;
        let counts = shares(node.addr("http").unwrap(), 200).await;
        assert_eq!(counts.get("good"), Some(&200), "{bad_mode:?}: {counts:?}");
        assert!(bad.attempts() > 50, "{bad_mode:?}: the bad server was hardly tried ({})", bad.attempts());
        node.stop().await;
    }
}

/// Servers a and b, both answering 502, behind a round-robin pool that
/// retries three times on `retry_on`.
async fn two_failing_servers(retry_on: &str) -> (Backend, Backend, sysmanage_node::runtime::Node) {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    a.set_mode(Mode::Status(502));
    b.set_mode(Mode::Status(502));
    let pool = format!(
        "balance = \"round_robin\"\nretries = 3\nretry_on = {retry_on}\nmax_fails = 1000\n{}",
        servers(&[(&a, ""), (&b, "")])
    );
    let node = start_node(&config(&pool, "")).await;
    (a, b, node)
}

/// A POST of the 7 bytes `payload` to `/upload`.
fn upload(addr: std::net::SocketAddr) -> Request<Full<Bytes>> {
    Request::post(format!("http://{addr}/upload")).body(Full::new(Bytes::from_static(b"payload"))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_whose_body_reached_the_server_is_not_retried() {
    let (a, b, node) = two_failing_servers(r#"["error", "http_502"]"#).await;
    let addr = node.addr("http").unwrap();
    let c = client();
    let (status, _, body) = send(&c, upload(addr)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body, "7", "the server's own 502 answer is passed through");
    assert_eq!(a.hits() + b.hits(), 1, "POST was sent more than once");

    // A reset after the server read the whole body: still not retried,
    // the client gets 502.
    a.set_mode(Mode::ResetAfterRead);
    b.set_mode(Mode::ResetAfterRead);
    let before = a.hits() + b.hits();
    let (status, _, _) = send(&c, upload(addr)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(a.hits() + b.hits() - before, 1, "POST read by servers more than once after a reset");

    // A reset before any byte was read (at accept) may move to the other
    // server: allowed, and the client still gets 502 (both reset).
    a.set_mode(Mode::Reset);
    b.set_mode(Mode::Reset);
    assert_eq!(send(&c, upload(addr)).await.0, StatusCode::BAD_GATEWAY);

    // The same GET is retried on the other server (and fails there too: 502).
    let before = a.attempts() + b.attempts();
    let (status, _, _) = get(&c, addr, "/x").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(a.attempts() + b.attempts() - before >= 2, "GET was not retried");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_alternate_servers_up_to_the_limit_and_only_on_listed_statuses() {
    let (a, b, node) = two_failing_servers(r#"["http_502"]"#).await;
    let addr = node.addr("http").unwrap();
    let c = client();
    for i in 0..10 {
        let before = (a.hits(), b.hits());
        let (status, _, _) = get(&c, addr, "/x").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "request {i}");
        // One try and three retries; never the same server twice in a
        // row, so with two servers each gets two of the four.
        let tries = (a.hits() - before.0, b.hits() - before.1);
        assert_eq!(tries, (2, 2), "request {i}: tries on (a, b)");
    }
    // 503 is not in retry_on: passed through after one try.
    a.set_mode(Mode::Status(503));
    b.set_mode(Mode::Status(503));
    for i in 0..4 {
        let before = a.hits() + b.hits();
        let (status, _, _) = get(&c, addr, "/x").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "request {i}");
        assert_eq!(a.hits() + b.hits() - before, 1, "request {i}: a status not in retry_on was retried");
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_health_keeps_a_failing_server_out_for_fail_timeout() {
    let (good, bad) = (Backend::start("good").await, Backend::start("bad").await);
    bad.set_mode(Mode::Status(502));
    let pool = format!(
        "retries = 1\nretry_on = [\"http_502\"]\nmax_fails = 2\nfail_timeout = \"2s\"\n{}",
        servers(&[(&good, ""), (&bad, "")])
    );
    let node = start_node(&config(&pool, "")).await;
    let addr = node.addr("http").unwrap();
    let c = client();
    // Round robin alternates: two failures come within the first few requests.
    for _ in 0..4 {
        assert_eq!(get(&c, addr, "/").await.0, StatusCode::OK);
    }
    assert_eq!(bad.hits(), 2, "bad server should have failed exactly max_fails times");
    let marked = tokio::time::Instant::now();
    // For fail_timeout it gets nothing.
    while marked.elapsed() < Duration::from_millis(1500) {
        let (status, _, body) = get(&c, addr, "/").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "good"));
    }
    assert_eq!(bad.hits(), 2, "bad server got traffic while out");
    // After fail_timeout it is tried again.
    wait_until(Duration::from_secs(4), "bad server tried again", || async {
        get(&c, addr, "/").await;
        bad.hits() > 2
    })
    .await;
    assert!(marked.elapsed() >= Duration::from_millis(1900), "retried too early: {:?}", marked.elapsed());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_available_is_503_and_a_timeout_is_504() {
    let slow = Backend::start("slow").await;
    slow.set_mode(Mode::Delay(Duration::from_secs(3)));
    let pool = format!(
        "read_timeout = \"300ms\"\nretries = 0\nmax_fails = 1\nfail_timeout = \"30s\"\n{}",
        servers(&[(&slow, "")])
    );
    let node = start_node(&config(&pool, "")).await;
    let addr = node.addr("http").unwrap();
    let c = client();
    let (status, _, body) = get(&c, addr, "/").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(body.contains("504"), "{body}");
    // The timeout counted as a failure (max_fails = 1): no server is left.
    let (status, _, body) = get(&c, addr, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("no server available"), "{body}");
    node.stop().await;
}

/// The active server of each `primary` pool, from the admin status.
async fn active_servers(admin: std::net::SocketAddr) -> HashMap<String, String> {
    let (status, _, body) = get(&client(), admin, "/api/v1/status").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let s: sysmanage_node::api::Status = serde_json::from_str(&body).unwrap();
    s.pools.iter().filter_map(|p| Some((p.name.clone(), p.servers.iter().find(|s| s.active)?.name.clone()))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_pools_over_the_same_servers_share_one_active_server() {
    // SysManage's setup: agents and API pools over the same two servers.
    // The API pool checks far less often, so on its own it would notice a
    // failure seconds later and send the API elsewhere meanwhile.
    let (s1, s2) = (Backend::start("s1").await, Backend::start("s2").await);
    let list = servers(&[(&s1, ""), (&s2, "")]);
    let pool = |interval: &str| {
        format!(
            "balance = \"primary\"\n\
             checks = [{{ path = \"/api/health\", interval = \"{interval}\", timeout = \"100ms\", fall = 1, rise = 1 }}]\n{list}"
        )
    };
    let toml = NodeToml::new()
        .listener("http", "")
        .pool("agents", &pool("100ms"))
        .pool("api", &pool("5s"))
        .route("agents", "/api/agent/", "agents", "")
        .route("api", "/", "api", "")
        .to_string();
    let node = start_node(&toml).await;
    let (addr, admin) = (node.addr("http").unwrap(), node.admin.unwrap());
    let both = |server: &str| {
        HashMap::from([("agents".to_string(), server.to_string()), ("api".to_string(), server.to_string())])
    };
    wait_until(Duration::from_secs(5), "both pools name s1", || async { active_servers(admin).await == both("s1") })
        .await;

    s1.set_health(503);
    wait_until(Duration::from_secs(3), "the agents pool fails over", || async {
        active_servers(admin).await.get("agents").map(String::as_str) == Some("s2")
    })
    .await;
    // Well before the API pool's own check (5 s) could notice.
    assert_eq!(active_servers(admin).await, both("s2"), "the API pool follows at once");
    assert_eq!(get(&client(), addr, "/api/v1/hosts").await.2, "s2");
    assert_eq!(get(&client(), addr, "/api/agent/auth").await.2, "s2");

    // s1 returns: no failback for either pool.
    s1.set_health(200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(active_servers(admin).await, both("s2"));
    node.stop().await;
}
