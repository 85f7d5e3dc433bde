//! What a node does when it runs short or a server hangs: out of file
//! descriptors, its listeners back off, log once, count it and resume by
//! themselves with nothing queued lost; a server that never answers, or
//! trickles its answer, times out, is taken out by passive health, and
//! holds up no other pool.

use crate::support;

use std::time::{Duration, Instant};

use support::process::Spawn;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REQUEST: &[u8] = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n";

/// Sends one request on `s` and reads the start of its answer, within `limit`.
async fn answer(s: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(limit, s.read(&mut buf)).await.ok()?.ok()?;
    (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// `name{labels} value` in a Prometheus page.
fn sample(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in:\n{page}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_listener_backs_off_and_recovers_by_itself() {
    let b = Backend::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("node.toml");
    let limits = "[limits]\nheader_timeout = \"60s\"\nkeepalive_timeout = \"60s\"";
    std::fs::write(&cfg, config(&servers(&[(&b, "")]), limits)).unwrap();
    let node = Spawn::run_with_open_files(&cfg, 48).started().await;
    let (addr, admin) = (node.listener_addr(), node.admin_addr());

    // Connections that are served and kept open, until one is not
    // answered: the node is out of descriptors and that one waits in the
    // kernel's queue.
    let mut served: Vec<TcpStream> = Vec::new();
    let mut queued = loop {
        assert!(served.len() < 60, "48 descriptors should run out before 60 connections");
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(REQUEST).await.unwrap();
        match answer(&mut s, Duration::from_millis(500)).await {
            Some(a) => {
                assert!(a.starts_with("HTTP/1.1 "), "{a}");
                served.push(s);
            }
            None => break s,
        }
    };
    assert!(!served.is_empty());
    let exhausted = Instant::now();
    let logged = tokio::task::spawn_blocking(move || {
        node.wait_line("the accept failure", Duration::from_secs(5), |l| l.contains("accept failed"));
        node
    })
    .await
    .unwrap();
    let node = logged;
    // Held for a few seconds: the loop pauses instead of spinning.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = exhausted.elapsed();
    let lines = node.lines_with("accept failed");
    assert_eq!(lines.len(), 1, "logged once per 10 s: {lines:?}");
    assert!(lines[0].contains("ERROR") && lines[0].contains("out of file descriptors"), "{}", lines[0]);
    assert!(lines[0].contains("LimitNOFILE"), "{}", lines[0]);

    // Descriptors come back: the queued connection is served, unasked.
    drop(served);
    let a = answer(&mut queued, Duration::from_secs(5)).await.expect("the queued connection is served");
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    node.wait_line("the recovery", Duration::from_secs(5), |l| l.contains("accepting connections again"));
    let (status, _, body) = get(&client(), addr, "/x").await;
    assert_eq!(status, 200, "{body}");

    // Counted, and few: a pause of up to a second between tries.
    let (_, _, page) = get(&client(), admin, "/metrics").await;
    let failures = sample(&page, "sysmanage_accept_errors_total{reason=\"descriptors\"} ");
    assert!(failures >= 2, "{failures}");
    eprintln!("{failures} failed accepts in {held:?} out of descriptors");
    let most = 2 * (held.as_secs() + 2) + 8;
    assert!(failures <= most, "{failures} failed accepts in {held:?}: the loop does not back off");
    drop(node);
}

/// A server that reads the request and then never answers.
async fn silent_server() -> std::net::SocketAddr {
    raw_server(|mut s| async move {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(s);
    })
    .await
}

/// A server that sends its answer's head one byte every 100 ms.
async fn trickling_server() -> std::net::SocketAddr {
    raw_server(|mut s| async move {
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let head = b"HTTP/1.1 200 OK\r\nX-Slow: ".iter().chain(std::iter::repeat(&b'a'));
        for b in head.take(1000) {
            if s.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

async fn server_state(admin: std::net::SocketAddr, pool: &str) -> String {
    let (_, _, body) = get(&client(), admin, "/api/v1/status").await;
    let s: sysmanage_node::api::Status = serde_json::from_str(&body).unwrap();
    s.pools.iter().find(|p| p.name == pool).unwrap().servers[0].state.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_server_times_out_is_taken_out_and_holds_up_nothing_else() {
    let ok = Backend::start("ok").await;
    let (silent, trickle) = (silent_server().await, trickling_server().await);
    let stuck_pool = |name: &str, addr: std::net::SocketAddr, read_timeout: &str| {
        format!(
            "[[pools]]\nname = \"{name}\"\nretries = 0\nmax_fails = 2\nfail_timeout = \"60s\"\n\
             read_timeout = \"{read_timeout}\"\nservers = [{{ addr = \"{addr}\" }}]\n\n\
             [[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\npool = \"{name}\"\n"
        )
    };
    let extra = format!("{}\n{}", stuck_pool("silent", silent, "5s"), stuck_pool("trickle", trickle, "1s"));
    let node = start_node(&config(&servers(&[(&ok, "")]), &extra)).await;
    let (addr, admin) = (node.addr("http").unwrap(), node.admin.unwrap());

    // Twenty requests hang on the silent server...
    let hanging: Vec<_> =
        (0..20).map(|i| tokio::spawn(async move { get(&client(), addr, &format!("/silent/{i}")).await.0 })).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...while the other pool answers every request, before any of them
    // has timed out.
    let c = client();
    for i in 0..100 {
        let (status, _, body) = get(&c, addr, &format!("/ok/{i}")).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(hanging.iter().all(|h| !h.is_finished()), "the other pool's requests came first");
    // Each hanging request ends at read_timeout with 504, and passive
    // health has taken the server out: the next request is not sent to it.
    for h in hanging {
        assert_eq!(h.await.unwrap(), 504);
    }
    assert_eq!(server_state(admin, "silent").await, "out");
    let (status, _, body) = get(&c, addr, "/silent/after").await;
    assert_eq!(status, 503, "{body}");

    // A head trickled one byte at a time is cut at read_timeout, however
    // steadily it comes.
    for _ in 0..2 {
        let (status, _, body) = get(&c, addr, "/trickle/x").await;
        assert_eq!(status, 504, "{body}");
    }
    assert_eq!(server_state(admin, "trickle").await, "out");
    let (status, _, _) = get(&c, addr, "/ok/last").await;
    assert_eq!(status, 200);
    node.stop().await;
}
