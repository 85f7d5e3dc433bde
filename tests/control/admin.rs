//! Health checks, server states and the admin API through a real node.

use crate::support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;
use sysmanage_node::api::{HealthReport, Status};

const TOKEN: &str = "s3cret-token";

struct Admin {
    base: String,
    c: TestClient,
}

impl Admin {
    fn new(node: &sysmanage_node::runtime::Node) -> Self {
        Admin { base: format!("http://{}", node.admin.expect("admin enabled")), c: client() }
    }
    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: &str) -> (StatusCode, String) {
        let mut req = Request::builder().method(method).uri(format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let (status, _, body) = send(&self.c, req.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await;
        (status, body)
    }
    async fn status(&self) -> Status {
        let (code, body) = self.call(Method::GET, "/api/v1/status", None, "").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        serde_json::from_str(&body).unwrap()
    }
    async fn server(&self, name: &str) -> sysmanage_node::api::ServerStatus {
        self.status().await.pools[0].servers.iter().find(|s| s.name == name).unwrap().clone()
    }
}

fn token_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    let line = format!("token_file = \"{}\"", path.display());
    (dir, line)
}

const CHECK: &str = r#"checks = [{ path = "/api/health", interval = "200ms", timeout = "150ms", fall = 2, rise = 2 }]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_checks_take_a_server_out_within_interval_times_fall_and_rise_brings_it_back() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let pool = format!("{CHECK}\n{}", servers(&[(&a, ""), (&b, "")]));
    let node = start_node(&config(&pool, "")).await;
    let addr = node.addr("http").unwrap();
    let admin = Admin::new(&node);
    let c = client();
    wait_until(Duration::from_secs(3), "checks ran", || async {
        a.state.health_hits.load(std::sync::atomic::Ordering::SeqCst) >= 2
    })
    .await;

    a.set_health(503);
    let failed_at = Instant::now();
    wait_until(Duration::from_secs(3), "a marked down", || async { admin.server("a").await.state == "down" }).await;
    // interval × fall = 400 ms, plus one interval of phase and jitter.
    assert!(failed_at.elapsed() < Duration::from_millis(1000), "took {:?}", failed_at.elapsed());
    let before = a.hits();
    for _ in 0..20 {
        assert_eq!(get(&c, addr, "/").await.2, "b");
    }
    assert_eq!(a.hits(), before, "a down server got traffic");
    let s = admin.status().await;
    assert_eq!(s.pools[0].available, 1);
    assert!(s.events.iter().any(|e| e.kind == "health" && e.message.starts_with("DOWN")), "{:?}", s.events);

    a.set_health(200);
    wait_until(Duration::from_secs(3), "a back up", || async { admin.server("a").await.state == "up" }).await;
    let counts: std::collections::HashSet<String> =
        futures_collect(20, || async { get(&c, addr, "/").await.2 }).await.into_iter().collect();
    assert!(counts.contains("a"), "a gets traffic again");
    node.stop().await;
}

async fn futures_collect<F, Fut>(n: usize, mut f: F) -> Vec<String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(f().await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_keeps_open_work_and_sends_new_requests_elsewhere_and_maintenance_gets_nothing() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let (_t, token_line) = token_file();
    let node = start_node(&config_admin(&servers(&[(&a, ""), (&b, "")]), "", &token_line)).await;
    let addr = node.addr("http").unwrap();
    let admin = Admin::new(&node);
    // One keep-alive client connection used throughout.
    let c = client();
    // A request in flight on a.
    let held = {
        let c = c.clone();
        tokio::spawn(async move { get(&c, addr, "/hold").await })
    };
    wait_until(Duration::from_secs(5), "held request on a backend", || async { a.hits() + b.hits() == 1 }).await;
    let (holder, other) = if a.hits() == 1 { (&a, "b") } else { (&b, "a") };
    let holder_name = if other == "a" { "b" } else { "a" };

    let (code, body) =
        admin.call(Method::POST, &format!("/api/v1/pools/p/servers/{holder_name}/drain"), Some(TOKEN), "").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(body.contains("\"to\":\"draining\""), "{body}");
    assert_eq!(admin.server(holder_name).await.state, "draining");
    for _ in 0..20 {
        let (status, _, who) = get(&c, addr, "/").await;
        assert_eq!((status, who.as_str()), (StatusCode::OK, other));
    }
    // The request that was on the draining server finishes normally.
    holder.state.release.notify_waiters();
    let (status, _, who) = held.await.unwrap();
    assert_eq!((status, who.as_str()), (StatusCode::OK, holder_name));

    // Maintenance: zero requests.
    let (code, _) =
        admin.call(Method::POST, &format!("/api/v1/pools/p/servers/{holder_name}/maintenance"), Some(TOKEN), "").await;
    assert_eq!(code, StatusCode::OK);
    let before = holder.hits();
    for _ in 0..20 {
        get(&c, addr, "/").await;
    }
    assert_eq!(holder.hits(), before);
    // Enable: traffic again.
    let (code, _) =
        admin.call(Method::POST, &format!("/api/v1/pools/p/servers/{holder_name}/enable"), Some(TOKEN), "").await;
    assert_eq!(code, StatusCode::OK);
    for _ in 0..20 {
        get(&c, addr, "/").await;
    }
    assert!(holder.hits() > before);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_ramps_the_weight_after_recovery() {
    let a = Backend::start("a").await;
    let pool = format!("slow_start = \"3s\"\n{CHECK}\n{}", servers(&[(&a, "weight = 100")]));
    let node = start_node(&config(&pool, "")).await;
    let admin = Admin::new(&node);
    wait_until(Duration::from_secs(3), "checks ran", || async { admin.server("a").await.last_check.is_some() }).await;
    a.set_health(500);
    wait_until(Duration::from_secs(3), "down", || async { admin.server("a").await.state == "down" }).await;
    a.set_health(200);
    wait_until(Duration::from_secs(3), "up", || async { admin.server("a").await.state == "up" }).await;
    let early = admin.server("a").await.effective_weight;
    assert!(early < 60, "effective weight right after recovery: {early}");
    wait_until(Duration::from_secs(6), "full weight", || async { admin.server("a").await.effective_weight == 100 })
        .await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detailed_health_is_degraded_when_partly_down_and_503_when_a_routed_pool_is_empty() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let pool = format!("{CHECK}\n{}", servers(&[(&a, ""), (&b, "")]));
    let node = start_node(&config(&pool, "")).await;
    let admin = Admin::new(&node);
    let health = || async {
        let (code, body) = admin.call(Method::GET, "/api/health/detailed", None, "").await;
        let r: HealthReport = serde_json::from_str(&body).unwrap();
        (code, r)
    };
    let (code, r) = health().await;
    assert_eq!((code, r.status.as_str()), (StatusCode::OK, "healthy"));
    assert_eq!(r.checks.backends.pools[0].available, 2);

    a.set_health(503);
    wait_until(Duration::from_secs(3), "degraded", || async { health().await.1.status == "degraded" }).await;
    assert_eq!(health().await.0, StatusCode::OK);

    b.set_health(503);
    wait_until(Duration::from_secs(3), "unhealthy", || async { health().await.1.status == "unhealthy" }).await;
    let (code, r) = health().await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.checks.backends.pools[0].available, 0);
    assert!(r.checks.backends.pools[0].routed);

    let (code, body) = admin.call(Method::GET, "/health", None, "").await;
    assert_eq!((code, body.as_str()), (StatusCode::OK, "healthy\n"));
    let (code, body) = admin.call(Method::GET, "/api/health", None, "").await;
    assert_eq!(code, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    let (code, body) = admin.call(Method::GET, "/api/health/websocket", None, "").await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.contains("\"active_tunnels\":0"), "{body}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_every_documented_family_is_present() {
    let a = Backend::start("a").await;
    let pool = format!("{CHECK}\n{}", servers(&[(&a, "")]));
    let node = start_node(&config(&pool, "")).await;
    let admin = Admin::new(&node);
    let c = client();
    for _ in 0..5 {
        get(&c, node.addr("http").unwrap(), "/x").await;
    }
    wait_until(Duration::from_secs(3), "a check ran", || async { admin.server("a").await.last_check.is_some() }).await;
    let resp = c
        .request(Request::get(format!("{}/metrics", admin.base)).body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let names: std::collections::HashSet<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for family in [
        "sysmanage_active_connections",
        "sysmanage_request_duration_seconds_count",
        "sysmanage_requests_total",
        "sysmanage_cpu_usage_percent",
        "sysmanage_memory_usage_bytes",
        "sysmanage_backend_up",
        "sysmanage_backend_active_connections",
        "sysmanage_backend_requests_total",
        "sysmanage_backend_response_seconds_count",
        "sysmanage_health_checks_total",
        "sysmanage_backend_state_changes_total",
        "sysmanage_retries_total",
        "sysmanage_websocket_tunnels",
    ] {
        assert!(names.contains(family), "{family} missing from:\n{text}");
    }
    let get_requests = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "sysmanage_requests_total"
                && s.labels.get("endpoint") == Some("default")
                && s.labels.get("method") == Some("GET")
        })
        .expect("requests_total{method=GET,endpoint=default}");
    assert!(matches!(get_requests.value, prometheus_parse::Value::Counter(v) if v >= 5.0), "{:?}", get_requests.value);
    let mem = scrape.samples.iter().find(|s| s.metric == "sysmanage_memory_usage_bytes").unwrap();
    assert!(matches!(mem.value, prometheus_parse::Value::Gauge(v) if v > 1e6));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_the_right_token_and_are_off_without_one() {
    let a = Backend::start("a").await;
    let (_t, token_line) = token_file();
    let node = start_node(&config_admin(&servers(&[(&a, "")]), "", &token_line)).await;
    let admin = Admin::new(&node);
    let path = "/api/v1/pools/p/servers/a/drain";
    let (code, body) = admin.call(Method::POST, path, None, "").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("missing admin token"), "{body}");
    let (code, body) = admin.call(Method::POST, path, Some("wrong"), "").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(body.contains("wrong admin token"), "{body}");
    assert_eq!(admin.server("a").await.admin, "normal", "refused writes changed nothing");
    for p in ["/api/v1/reload"] {
        assert_eq!(admin.call(Method::POST, p, Some("wrong"), "").await.0, StatusCode::UNAUTHORIZED);
    }
    // Bad inputs with the right token.
    let (code, body) = admin.call(Method::POST, "/api/v1/pools/nope/servers/a/drain", Some(TOKEN), "").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(body.contains("no pool named \\\"nope\\\""), "{body}");
    let (code, body) = admin.call(Method::POST, "/api/v1/pools/p/servers/zz/drain", Some(TOKEN), "").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    let (code, body) = admin.call(Method::POST, "/api/v1/pools/p/servers/a/explode", Some(TOKEN), "").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(body.contains("unknown action"), "{body}");
    let (code, body) =
        admin.call(Method::PUT, "/api/v1/pools/p/servers/a/weight", Some(TOKEN), "{\"weight\": 0}").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body.contains("weight must be 1..=256, got 0"), "{body}");
    let (code, body) = admin.call(Method::PUT, "/api/v1/pools/p/servers/a/weight", Some(TOKEN), "heavy").await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let (code, _) = admin.call(Method::PUT, "/api/v1/pools/p/servers/a/weight", Some(TOKEN), "{\"weight\": 7}").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(admin.server("a").await.weight, 7);
    node.stop().await;

    // No token configured: writes are off.
    let node = start_node(&config(&servers(&[(&a, "")]), "")).await;
    let admin = Admin::new(&node);
    let (code, body) = admin.call(Method::POST, path, Some(TOKEN), "").await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(body.contains("write actions are off"), "{body}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refuses_a_bad_file_and_keeps_a_streaming_response_alive() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let (_t, token_line) = token_file();
    let toml = config_admin(&servers(&[(&a, "")]), "", &token_line);
    let (node, _dir, path) = start_node_file(&toml).await;
    let addr = node.addr("http").unwrap();
    let admin = Admin::new(&node);
    let c = client();

    // A long download in progress.
    let resp = c
        .request(
            Request::get(format!("http://{addr}/download?n={}", 64u64 << 20)).body(Full::new(Bytes::new())).unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut got = body.frame().await.unwrap().unwrap().into_data().unwrap().len() as u64;

    std::fs::write(&path, "[[pools]]\nname = 1\n").unwrap();
    let (code, text) = admin.call(Method::POST, "/api/v1/reload", Some(TOKEN), "").await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    assert!(text.contains("node.toml:2:8: pools[0].name: invalid type"), "{text}");
    assert_eq!(get(&c, addr, "/").await.2, "a", "old config still serves");

    // A good file: pool now points at b; the download goes on.
    std::fs::write(&path, config_admin(&servers(&[(&b, "")]), "", &token_line)).unwrap();
    let (code, text) = admin.call(Method::POST, "/api/v1/reload", Some(TOKEN), "").await;
    assert_eq!(code, StatusCode::OK, "{text}");
    assert_eq!(get(&c, addr, "/").await.2, "b");
    while let Some(frame) = body.frame().await {
        got += frame.expect("stream survived the reload").into_data().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(got, 64 << 20);
    let events = admin.status().await.events;
    assert!(events.iter().any(|e| e.kind == "reload" && e.message.starts_with("refused")));
    assert!(events.iter().any(|e| e.kind == "reload" && e.message.starts_with("applied")));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_command_exit_codes_and_ctl() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let (t, token_line) = token_file();
    let pool = format!("{CHECK}\n{}", servers(&[(&a, ""), (&b, "")]));
    let node = start_node(&config_admin(&pool, "", &token_line)).await;
    let base = format!("http://{}", node.admin.unwrap());
    let url = format!("{base}/api/health/detailed");
    let run = |args: Vec<String>| tokio::task::spawn_blocking(move || support::process::run(&args));
    let health = |url: String| run(vec!["health".into(), "--url".into(), url, "--retries".into(), "0".into()]);

    let (code, out, _) = health(url.clone()).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"status\":\"healthy\""), "{out}");
    a.set_health(503);
    let admin = Admin::new(&node);
    wait_until(Duration::from_secs(3), "a down", || async { admin.server("a").await.state == "down" }).await;
    assert_eq!(health(url.clone()).await.unwrap().0, 1);
    b.set_health(503);
    wait_until(Duration::from_secs(3), "b down", || async { admin.server("b").await.state == "down" }).await;
    assert_eq!(health(url.clone()).await.unwrap().0, 2);

    // ctl against the running node.
    let tf = t.path().join("admin.token").display().to_string();
    let (code, out, err) = run(vec!["ctl".into(), "--admin".into(), base.clone(), "backends".into()]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pool p (round_robin, 0/2 available)"), "{out}");
    assert!(out.contains("FAIL"), "{out}");
    let (code, out, err) = run(vec![
        "ctl".into(),
        "--admin".into(),
        base.clone(),
        "--token-file".into(),
        tf.clone(),
        "drain".into(),
        "p".into(),
        "a".into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "p/a: normal -> draining\n");
    let (code, _, err) =
        run(vec!["ctl".into(), "--admin".into(), base.clone(), "drain".into(), "p".into(), "a".into()]).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("answered 401"), "{err}");
    let (code, out, _) =
        run(vec!["ctl".into(), "--admin".into(), base.clone(), "--json".into(), "status".into()]).await.unwrap();
    assert_eq!(code, 0);
    let s: Status = serde_json::from_str(&out).unwrap();
    assert_eq!(s.pools[0].servers[0].admin, "draining");

    let stopped = node.admin.unwrap();
    node.stop().await;
    let (code, _, err) = health(format!("http://{stopped}/api/health/detailed")).await.unwrap();
    assert_eq!(code, 2);
    assert!(err.contains("cannot reach"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_requests_refused_by_rate_limits() {
    let a = Backend::start("a").await;
    let toml = NodeToml::new()
        .listener("http", "")
        .pool("p", &servers(&[(&a, "")]))
        .tables("[[rate_limits]]\nname = \"tight\"\nrate = \"1/s\"\nburst = 1")
        .route("default", "/", "p", "rate_limit = \"tight\"")
        .to_string();
    let node = start_node(&toml).await;
    let admin = Admin::new(&node);
    assert_eq!(admin.status().await.totals.rate_limited, Some(0));
    let c = client();
    let mut refused = 0;
    for _ in 0..6 {
        if get(&c, node.addr("http").unwrap(), "/").await.0 != StatusCode::OK {
            refused += 1;
        }
    }
    assert!(refused >= 4, "{refused} refused");
    assert_eq!(admin.status().await.totals.rate_limited, Some(refused));
    node.stop().await;
}
