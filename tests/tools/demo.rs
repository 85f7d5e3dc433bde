//! `sysmanage-node demo --no-tui` as a real process: it starts, traffic
//! flows through all three nodes to all three backends with agents holding
//! WebSockets on every node, and Ctrl-C (SIGINT) stops it cleanly within a
//! bounded time, removing its temporary directory.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sysmanage-node");

/// Kills the demo if the test fails half-way.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(args: &[&str]) -> (Demo, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .arg("demo")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary runs");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (Demo(child), rx)
}

/// The `name=N` counts in one `|`-separated part of a summary line.
fn counts(part: &str) -> Vec<(String, u64)> {
    let list = part.split_once(':').map(|(_, l)| l).unwrap_or(part);
    list.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(0)))
        .collect()
}

/// Requests reached every node, all of them the one active backend (the
/// demo runs SysManage's setup: `primary` pools), and every node holds
/// tunnels.
fn all_flowing(line: &str) -> bool {
    let parts: Vec<&str> = line.split('|').collect();
    if parts.len() < 4 || !parts[0].contains("requests per node") {
        return false;
    }
    let ok = |part: &str, names: &[&str]| {
        let c = counts(part);
        names.iter().all(|n| c.iter().any(|(k, v)| k == n && *v > 0))
    };
    let only_app1 = counts(parts[1]).iter().all(|(k, v)| k == "app1" || *v == 0);
    // The three nodes are one cluster: each sees three live members.
    let clustered = parts.last().is_some_and(|p| {
        p.contains("cluster members live")
            && counts(p).iter().filter(|(k, v)| k.starts_with("node") && *v == 3).count() == 3
    });
    ok(parts[0], &["node1", "node2", "node3"])
        && ok(parts[1], &["app1"])
        && only_app1
        && ok(parts[2], &["node1", "node2", "node3"])
        && clustered
}

fn wait_line(
    rx: &mpsc::Receiver<String>,
    limit: Duration,
    seen: &mut Vec<String>,
    pred: impl Fn(&str) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = pred(&line);
                seen.push(line);
                if hit {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
    false
}

#[test]
fn demo_shows_traffic_through_every_node_and_stops_on_ctrl_c() {
    let (mut demo, rx) = start(&["--no-tui"]);
    let mut seen = Vec::new();
    assert!(
        wait_line(&rx, Duration::from_secs(40), &mut seen, all_flowing),
        "no summary with traffic on all nodes, all of it on the active backend app1, and a cluster of three:\n{}",
        seen.join("\n")
    );
    let dir = seen
        .iter()
        .find_map(|l| l.strip_prefix("files in ").map(|r| r.trim_end_matches(" (removed at exit)").to_string()))
        .expect("the demo names its directory");
    assert!(std::path::Path::new(&dir).is_dir(), "{dir} exists while running");
    assert!(seen.iter().any(|l| l.contains("The nodes form one cluster")), "says the nodes are clustered");

    // Ctrl-C.
    let pid = demo.0.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().expect("kill runs");
    assert!(sent.success());
    let asked = Instant::now();
    let status = loop {
        if let Some(s) = demo.0.try_wait().unwrap() {
            break s;
        }
        assert!(asked.elapsed() < Duration::from_secs(15), "demo still running 15s after SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
        seen.push(line);
    }
    assert!(seen.iter().any(|l| l.contains("stopping (Ctrl-C)")), "{}", seen.join("\n"));
    assert!(!std::path::Path::new(&dir).exists(), "{dir} removed at exit");
}

#[test]
fn demo_duration_ends_it_by_itself() {
    let (mut demo, rx) = start(&["--no-tui", "--duration", "3"]);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = demo.0.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "demo --duration 3 still running after 30s");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    let out: Vec<String> = rx.try_iter().collect();
    assert!(out.iter().any(|l| l.contains("--duration reached")), "{}", out.join("\n"));
}
