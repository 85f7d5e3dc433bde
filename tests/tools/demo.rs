//! `sysmanage-node demo --no-tui` as a real process: it starts, traffic
//! flows through all three nodes to all three backends with agents holding
//! WebSockets on every node, and Ctrl-C (SIGINT) stops it cleanly within a
//! bounded time, removing its temporary directory.

use std::time::Duration;

use crate::support::process::{Process, Spawn};

/// `sysmanage-node demo ARGS`, its stdout read line by line.
fn start(args: &[&str]) -> Process {
    let mut all = vec!["demo"];
    all.extend_from_slice(args);
    Spawn::new(&all).read_stdout().spawn()
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

#[test]
fn demo_shows_traffic_through_every_node_and_stops_on_ctrl_c() {
    let mut demo = start(&["--no-tui"]);
    assert!(
        demo.find_line(Duration::from_secs(40), all_flowing).is_some(),
        "no summary with traffic on all nodes, all of it on the active backend app1, and a cluster of three:\n{}",
        demo.lines().join("\n")
    );
    let seen = demo.lines();
    let dir = seen
        .iter()
        .find_map(|l| l.strip_prefix("files in ").map(|r| r.trim_end_matches(" (removed at exit)").to_string()))
        .expect("the demo names its directory");
    assert!(std::path::Path::new(&dir).is_dir(), "{dir} exists while running");
    assert!(seen.iter().any(|l| l.contains("The nodes form one cluster")), "says the nodes are clustered");

    // Ctrl-C.
    demo.signal("-INT");
    let status = demo.wait_exit(Duration::from_secs(15)).expect("demo still running 15s after SIGINT");
    assert!(status.success(), "exit status {status}");
    let seen = demo.lines();
    assert!(seen.iter().any(|l| l.contains("stopping (Ctrl-C)")), "{}", seen.join("\n"));
    assert!(!std::path::Path::new(&dir).exists(), "{dir} removed at exit");
}

#[test]
fn demo_duration_ends_it_by_itself() {
    let mut demo = start(&["--no-tui", "--duration", "3"]);
    let status = demo.wait_exit(Duration::from_secs(30)).expect("demo --duration 3 still running after 30s");
    assert!(status.success(), "exit status {status}");
    let out = demo.lines();
    assert!(out.iter().any(|l| l.contains("--duration reached")), "{}", out.join("\n"));
}
