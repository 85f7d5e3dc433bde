//! Five full nodes in one process (each with its own gossip socket on
//! 127.0.0.x): session records written anywhere converge everywhere,
//! concurrent writes of one key resolve to the same winner on every node,
//! a removal (tombstone) wins over the older record, and connection counts
//! are summed across nodes for `least_loaded`.

use crate::support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::{free_port, wait_until, Backend};
use sysmanage_node::runtime::Node;
use sysmanage_node::sessions::unix_now_ms;

const SECRET: &str = "7e1d2c3b4a5968778695a4b3c2d1e0f0e1d2c3b4a5968778695a4b3c2d1e0f0";

struct Cluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

async fn start(n: u8, first_ip: u8, pool: &str) -> Cluster {
    start_with(n, first_ip, pool, "").await
}

/// `extra` goes at the top level of every node's config (e.g. zones).
async fn start_with(n: u8, first_ip: u8, pool: &str, extra_top: &str) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cluster.key");
    support::write_secret(&secret, SECRET);
    let mut nodes = Vec::new();
    let mut seed = None;
    for i in 0..n {
        let ip = std::net::IpAddr::from([127, 0, 0, first_ip + i]);
        let gossip = std::net::SocketAddr::new(ip, free_port(ip));
        let seeds = seed.map(|s| format!("seeds = [\"{s}\"]")).unwrap_or_default();
        let extra = format!(
            "{extra_top}\n[node]\nname = \"n{i}\"\ndata_dir = \"{}\"\n[cluster]\nlisten = \"{gossip}\"\n{seeds}\nsecret_file = \"{}\"\ngossip_interval = \"100ms\"\n",
            dir.path().join(format!("n{i}")).display(),
            secret.display()
        );
        nodes.push(support::start_node(&support::config(pool, &extra)).await);
        seed.get_or_insert(gossip);
    }
    for node in &nodes {
        let rt = node.control.cluster().unwrap();
        wait_until(Duration::from_secs(20), "every node sees every other", || async {
            rt.view.live_peers().len() == usize::from(n) - 1
        })
        .await;
    }
    Cluster { nodes, _dir: dir }
}

fn owner(node: &Node, key: &str) -> Option<String> {
    let s = node.control.sessions().unwrap();
    s.table.get("p", key, unix_now_ms()).map(|o| o.to_string())
}

fn record(node: &Node, key: &str) -> Option<sysmanage_node::sessions::SessionRecord> {
    node.control.sessions().unwrap().table.record("p", key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_converge_conflicts_agree_tombstones_win_and_counts_sum() {
    let (b1, b2, b3) = (Backend::start("s1").await, Backend::start("s2").await, Backend::start("s3").await);
    let pool =
        format!("affinity = {{ key = \"header:X-Agent\" }}\n{}", support::servers(&[(&b1, ""), (&b2, ""), (&b3, "")]));
    let c = start(5, 20, &pool).await;
    let ttl = Duration::from_secs(3600);
    let sessions: Vec<_> = c.nodes.iter().map(|n| n.control.sessions().unwrap()).collect();

    // Records written on every node reach every node.
    for (i, s) in sessions.iter().enumerate() {
        for k in 0..20 {
            let rec = s.table.assign("p", &format!("k{i}-{k}"), ["s1", "s2", "s3"][k % 3], ttl, unix_now_ms());
            s.persist(rec);
        }
    }
    for node in &c.nodes {
        wait_until(Duration::from_secs(10), "100 records everywhere", || async {
            node.control.sessions().unwrap().table.len() == 100
        })
        .await;
    }
    for node in &c.nodes {
        assert_eq!(owner(node, "k3-4").as_deref(), Some("s2"));
    }

    // One key written on every node at once, each to another server: every
    // node ends with the same winner (highest version, then origin).
    for (i, s) in sessions.iter().enumerate() {
        let rec = s.table.assign("p", "contested", ["s1", "s2", "s3"][i % 3], ttl, unix_now_ms());
        s.persist(rec);
    }
    wait_until(Duration::from_secs(10), "one winner everywhere", || async {
        let first = record(&c.nodes[0], "contested");
        c.nodes.iter().all(|n| record(n, "contested") == first)
    })
    .await;
    let winner = record(&c.nodes[0], "contested").unwrap();
    let expected = sessions
        .iter()
        .map(|s| s.table.record("p", "contested").unwrap())
        .max_by(|a, b| (a.version, a.origin.as_str()).cmp(&(b.version, b.origin.as_str())));
    assert_eq!(Some(&winner), expected.as_ref());

    // A removal on one node wins over the older record everywhere, and an
    // older record arriving late does not bring the key back.
    let stale = record(&c.nodes[1], "k1-0").unwrap();
    let tomb = sessions[4].table.remove("p", "k1-0", unix_now_ms()).unwrap();
    sessions[4].persist(tomb);
    for node in &c.nodes {
        wait_until(Duration::from_secs(10), "the tombstone everywhere", || async { owner(node, "k1-0").is_none() })
            .await;
    }
    assert!(!sessions[2].merge_remote(stale, unix_now_ms()), "an older record loses to the tombstone");
    assert!(owner(&c.nodes[2], "k1-0").is_none());

    // Connection counts sum: requests held open on two nodes show up on a
    // third as remote connections of the server they went to.
    let client = support::client();
    let mut held = Vec::new();
    for node in &c.nodes[..2] {
        for _ in 0..3 {
            let addr = node.addr("http").unwrap();
            let client = client.clone();
            held.push(tokio::spawn(async move {
                let req = http::Request::get(format!("http://{addr}/hold"))
                    .header("x-agent", "k0-0")
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap();
                support::send(&client, req).await
            }));
        }
    }
    let snap = c.nodes[4].control.snapshot();
    let s1 = snap.pool("p").unwrap().servers.iter().find(|s| s.name == "s1").unwrap().state.clone();
    wait_until(Duration::from_secs(10), "node 5 sums the 6 connections of nodes 1 and 2", || async {
        s1.remote_connections.load(Ordering::Relaxed) == 6
    })
    .await;
    let status: serde_json::Value =
        serde_json::from_str(&support::get(&support::client(), c.nodes[4].admin.unwrap(), "/api/v1/members").await.2)
            .unwrap();
    let connections: u64 = status["members"].as_array().unwrap().iter().filter_map(|m| m["connections"].as_u64()).sum();
    assert_eq!(connections, 6, "{status}");
    b1.state.release.notify_waiters();
    for h in held {
        assert_eq!(h.await.unwrap().0, 200);
    }
    for node in c.nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_wide_zone_limits_the_sum_of_the_nodes_counts() {
    let b1 = Backend::start("s1").await;
    let zone = "[[rate_limits]]\nname = \"agents\"\nrequests = 10\nwindow = \"60s\"\nkey = \"header:X-Agent\"\ncluster = true\n[[routes]]\nname = \"limited\"\npath = \"/limited\"\npool = \"p\"\nrate_limit = \"agents\"\n";
    let pool = support::servers(&[(&b1, "")]);
    let c = start_with(3, 30, &pool, zone).await;
    // `/limited` is rate-limited by the cluster-wide zone (first route).
    let client = support::client();
    let get = |i: usize| {
        let addr = c.nodes[i].addr("http").unwrap();
        let client = client.clone();
        async move {
            let req = http::Request::get(format!("http://{addr}/limited"))
                .header("x-agent", "host-1")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            support::send(&client, req).await.0
        }
    };
    for _ in 0..4 {
        assert_eq!(get(0).await, 200);
        assert_eq!(get(1).await, 200);
    }
    // Node 3 learns both counts (4 + 4), not one overwriting the other.
    let state = c.nodes[2].control.shared.state.load_full();
    let z = state.zones.iter().flatten().find(|z| z.config.name == "agents").unwrap().zone.clone();
    let key = sysmanage_node::ratelimit::key_for_header(b"host-1");
    wait_until(Duration::from_secs(10), "node 3 sums the other nodes' counts", || async {
        z.remote_count(key, sysmanage_node::clock::now_ms()) == 8
    })
    .await;
    assert_eq!(get(2).await, 200, "9th request in the cluster");
    assert_eq!(get(2).await, 200, "10th");
    assert_eq!(get(2).await, 429, "11th: over the cluster-wide limit of 10");
    // Another key is not affected.
    let addr = c.nodes[2].addr("http").unwrap();
    let req = http::Request::get(format!("http://{addr}/limited"))
        .header("x-agent", "host-2")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(support::send(&client, req).await.0, 200);
    for node in c.nodes {
        node.stop().await;
    }
}
