//! The real binary as a separate process: `check-config`, commands not yet
//! available, streaming 1 GiB each way with bounded memory, graceful
//! shutdown on SIGTERM and SIGINT, and the access log in both formats.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::process::{run, Process, Spawn};
use support::*;

/// The binary running `config` (written to `node.toml` in the returned
/// directory), and its listener's address.
fn start(config: &str) -> (Process, SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).unwrap();
    let node = Spawn::run(&path).spawn();
    let addr = node.listener_addr();
    (node, addr, dir)
}

/// CPU time `node` used so far (user + system), in clock ticks (1/100 s).
fn cpu_ticks(node: &Process) -> u64 {
    let secs = sysmanage_node::admin::prometheus::cpu_seconds(&node.pid().to_string()).unwrap();
    (secs * 100.0).round() as u64
}

/// CPU ticks `node` uses over the next second.
async fn cpu_ticks_in_a_second(node: &Process) -> u64 {
    let t0 = cpu_ticks(node);
    tokio::time::sleep(Duration::from_secs(1)).await;
    cpu_ticks(node) - t0
}

#[test]
fn check_config_prints_a_summary_or_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, config("servers = [{ addr = \"127.0.0.1:8080\", weight = 2 }]", "")).unwrap();
    let (code, out, _) = run(&["check-config", good.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("good.toml: OK"), "{out}");
    assert!(out.contains("listener http on 127.0.0.1:0"), "{out}");
    assert!(out.contains("pool p (round_robin, 1 servers)"), "{out}");
    assert!(out.contains("server 127.0.0.1:8080 weight 2"), "{out}");
    assert!(out.contains("route default /* -> pool p"), "{out}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[limits]\nmax_body = \"lots\"\n[[listeners]]\nname = \"x\"\nbind = \"nowhere\"\n").unwrap();
    let (code, _, err) = run(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("bad.toml:2:12: limits.max_body: expected a size"), "{err}");
    assert!(err.contains("bad.toml:5:8: listeners[0].bind: expected an IP address and port"), "{err}");
    assert!(err.contains("bad.toml: 3 error(s)"), "{err}");

    let (code, _, err) = run(&["check-config", "/nonexistent/node.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/node.toml: cannot read the config file"), "{err}");
}

#[test]
fn join_needs_a_cluster_table_and_a_peer_address() {
    // The embedded default config is standalone: refused before any traffic.
    let (code, _, err) = run(&["join", "10.0.0.1:7946"]);
    assert_eq!(code, 1, "join");
    assert!(err.contains("join needs a [cluster] table in <embedded default>"), "join: {err}");
    let (code, _, err) = run(&["run", "-c", "/nonexistent.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid config"), "{err}");
}

const GIB: u64 = 1 << 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_each_way_streams_with_rss_under_64_mib() {
    let b = Backend::start("b").await;
    let (node, addr, _dir) =
        start(&config(&servers(&[(&b, "")]), "[limits]\nmax_body = \"2GiB\"\n[node]\nworkers = 2"));
    let c: Client<_, Upload> = Client::builder(TokioExecutor::new()).build_http();

    // Download: count the bytes as they arrive, keep none.
    let req = Request::get(format!("http://{addr}/download?n={GIB}"))
        .body(Upload { remaining: 0, chunk: Bytes::new() })
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        got += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(got, GIB);

    // Upload, chunked: the server counts what arrives.
    let req = Request::post(format!("http://{addr}/upload"))
        .body(Upload { remaining: GIB, chunk: Bytes::from(vec![b'u'; 256 * 1024]) })
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, GIB.to_string().as_bytes());

    let peak = node.peak_rss_kib();
    assert!(peak < 64 * 1024, "node peak RSS {peak} KiB is not under 64 MiB");
}

/// With `node.busy_poll` (and `node.busy_poll_coalesce`) set, requests are
/// served as usual and a node with no traffic sleeps: it uses next to no CPU
/// before the first request and after the last one. (That it keeps polling
/// while traffic flows, and waits only after light turns, is the poller's
/// unit tests, `busy_poll::tests`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_poll_serves_and_an_idle_node_uses_no_cpu() {
    let b = Backend::start("b").await;
    let (node, addr, _dir) = start(&config(
        &servers(&[(&b, "")]),
        "[node]\nworkers = 1\nbusy_poll = \"20ms\"\nbusy_poll_coalesce = \"10us\"",
    ));
    let ticks_per_s = 100; // USER_HZ on Linux
    let before = cpu_ticks_in_a_second(&node).await;
    assert!(before * 5 <= ticks_per_s, "an idle node used {before} ticks of CPU in 1 s before any request");

    let c = client();
    for i in 0..200 {
        let (status, _, body) = get(&c, addr, &format!("/r{i}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(b.hits(), 200);
    // Well past the 20 ms window: the poller has gone to sleep.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = cpu_ticks_in_a_second(&node).await;
    assert!(after * 5 <= ticks_per_s, "the node used {after} ticks of CPU in the second after its last request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    signal_lets_in_flight_requests_finish_then_exits_zero("-TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_lets_in_flight_requests_finish_then_exits_zero() {
    signal_lets_in_flight_requests_finish_then_exits_zero("-INT").await;
}

async fn signal_lets_in_flight_requests_finish_then_exits_zero(sig: &str) {
    let b = Backend::start("b").await;
    b.set_mode(Mode::Delay(Duration::from_millis(1500)));
    let (mut node, addr, _dir) = start(&config(&servers(&[(&b, "")]), "[limits]\nshutdown_timeout = \"10s\""));
    let in_flight = tokio::spawn(async move { get(&client(), addr, "/slow").await });
    wait_until(Duration::from_secs(5), "request reached the backend", || async { b.hits() == 1 }).await;
    node.signal(sig);
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "b"), "in-flight request was cut");
    let code = tokio::task::spawn_blocking(move || {
        let status = node.wait_exit(Duration::from_secs(15)).expect("the node exits within 15 s of the signal");
        status.code()
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0));
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still accepting after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_pools_and_keeps_the_old_config_on_error() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let (node, addr, dir) = start(&config(&servers(&[(&a, "")]), ""));
    let c = client();
    assert_eq!(get(&c, addr, "/").await.2, "a");
    // An invalid file is refused: traffic keeps flowing to a.
    std::fs::write(dir.path().join("node.toml"), "this is not toml").unwrap();
    node.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&c, addr, "/").await.2, "a");
    // A valid one moves the pool to b; the listener (port 0) is unchanged.
    let cfg = config(&servers(&[(&b, "")]), "").replace("127.0.0.1:0", &addr.to_string());
    std::fs::write(dir.path().join("node.toml"), cfg).unwrap();
    node.signal("-HUP");
    wait_until(Duration::from_secs(5), "reload moved traffic to b", || async { get(&c, addr, "/").await.2 == "b" })
        .await;
}

#[test]
fn cert_self_signed_writes_a_usable_pair_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tls");
    let (code, stdout, err) = run(&[
        "cert",
        "self-signed",
        "--host",
        "lb1.example.com",
        "--host",
        "127.0.0.1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("server.crt"), "{stdout}");
    let cert = std::fs::read_to_string(out.join("server.crt")).unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
    let mode = std::fs::metadata(out.join("server.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key must be private");
    // The pair loads as a TLS listener's certificate.
    let toml = format!(
        "[[listeners]]\nname = \"https\"\nbind = \"127.0.0.1:0\"\ntls = {{ cert = \"{}\", key = \"{}\" }}\n[[routes]]\nname = \"h\"\npath = \"/\"\nrespond = {{ status = 200 }}\n",
        out.join("server.crt").display(),
        out.join("server.key").display()
    );
    let cfg = dir.path().join("node.toml");
    std::fs::write(&cfg, toml).unwrap();
    assert_eq!(run(&["check-config", cfg.to_str().unwrap()]).0, 0);
    let (code, _, err) = run(&["cert", "self-signed", "--host", "x", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = run(&["cert", "self-signed", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 2, "clap usage error without --host");
    assert!(err.contains("--host"), "{err}");
}

#[test]
fn check_config_loads_certificates_like_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        "[[listeners]]\nname = \"https\"\nbind = \"127.0.0.1:0\"\ntls = { cert = \"missing.crt\", key = \"missing.key\" }\n[[routes]]\nname = \"h\"\npath = \"/\"\nrespond = { status = 200 }\n",
    )
    .unwrap();
    let (code, out, err) = run(&["check-config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("listener https: TLS: certificate file"), "{err}");
    assert!(err.contains("missing.crt: not found"), "{err}");
}

/// The access log lines of a node with the access log on, in `format`:
/// one for a proxied request, one for a request its server failed (the
/// node answers 502 or 503 itself).
async fn access_log_lines(format: &str) -> (String, String) {
    let b = Backend::start("b").await;
    let cfg = config(&servers(&[(&b, "")]), "")
        .replace("access_log = false", &format!("access_log = true\nformat = \"{format}\""));
    let (node, addr, _dir) = start(&cfg);
    let c = client();
    assert_eq!(get(&c, addr, "/logged?q=1").await.0, StatusCode::OK);
    b.set_mode(Mode::Reset);
    wait_until(Duration::from_secs(5), "the node answers an error once its server fails", || async {
        get(&c, addr, "/gone").await.0 != StatusCode::OK
    })
    .await;
    wait_until(Duration::from_secs(5), "both requests logged", || async {
        !node.lines_with("/logged").is_empty() && !node.lines_with("/gone").is_empty()
    })
    .await;
    (node.lines_with("/logged").remove(0), node.lines_with("/gone").remove(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_text_line_per_request() {
    let (ok, failed) = access_log_lines("text").await;
    for field in ["access", "method=GET", "path=/logged", "status=200", "bytes=1", "route=\"default\"", "server=\"b\""]
    {
        assert!(ok.contains(field), "{field} missing from the access log line: {ok}");
    }
    assert!(ok.contains("client=127.0.0.1"), "client IP missing: {ok}");
    assert!(!ok.contains("q=1"), "the query string is logged: {ok}");
    assert!(ok.contains("duration_ms="), "duration missing: {ok}");
    assert!(failed.contains("path=/gone") && failed.contains("status=50"), "{failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_json_object_per_request() {
    let (ok, failed) = access_log_lines("json").await;
    let v: serde_json::Value = serde_json::from_str(&ok).expect("access log line is JSON");
    assert_eq!(v["target"], "access", "{v}");
    assert_eq!(v["method"], "GET", "{v}");
    assert_eq!(v["path"], "/logged", "{v}");
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["bytes"], 1, "{v}");
    assert_eq!(v["route"], "default", "{v}");
    assert_eq!(v["server"], "b", "{v}");
    assert_eq!(v["client"], "127.0.0.1", "{v}");
    assert!(v["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{v}");
    let failed: serde_json::Value = serde_json::from_str(&failed).expect("access log line is JSON");
    assert_eq!(failed["path"], "/gone", "{failed}");
    assert!(failed["status"].as_u64().is_some_and(|s| (502..=504).contains(&s)), "{failed}");
}
