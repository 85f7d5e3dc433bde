//! What a node does when it runs short: out of file descriptors, its
//! listeners back off, log once, count it and resume by themselves with
//! nothing queued lost.

use crate::support;

use std::time::{Duration, Instant};

use support::process::{Spawn, READY};
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
    let cfg2 = cfg.clone();
    let node = tokio::task::spawn_blocking(move || {
        let node = Spawn::run_with_open_files(&cfg2, 48).spawn();
        node.wait_line("that it started", READY, |l| l.contains("sysmanage-node started"));
        node
    })
    .await
    .unwrap();
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
