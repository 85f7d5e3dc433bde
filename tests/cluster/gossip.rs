//! Cluster logic tests: several chitchat nodes in one process, gossiping over
//! the real encrypted UDP transport on loopback (`127.0.0.x`, ephemeral
//! ports), with a short gossip interval and an eager failure detector.
//! Every wait is on a condition with a deadline, never a bare sleep.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use sysmanage_node::cluster::transport::Sealer;
use sysmanage_node::cluster::{
    Cluster, ClusterChange, ClusterChangeStream, ClusterConfig, ClusterKey, ClusterSecret, FailureDetectorConfig,
    FaultInjector, GossipKey, GossipValue, HealthView, MemberState, SecureTransport, ServerHealth,
};

const INTERVAL: Duration = Duration::from_millis(100);
const DEADLINE: Duration = Duration::from_secs(20);
const SECRET: &str = "b3a1f09c55e2d47a8c16e0f4d2b97a3e";
const OTHER_SECRET: &str = "7d0e4c91aa3f58b2e6c0d91f47b8a2c5";

fn key(secret: &str) -> ClusterKey {
    ClusterKey::derive(&ClusterSecret::from_bytes(secret.as_bytes()).unwrap())
}

fn config(name: &str, ip: u8, seeds: &[SocketAddr]) -> ClusterConfig {
    let mut c = ClusterConfig::new(name, SocketAddr::from(([127, 0, 0, ip], 0)));
    c.seeds = seeds.iter().map(ToString::to_string).collect();
    c.gossip_interval = INTERVAL;
    c.failure_detector = FailureDetectorConfig {
        phi_threshold: 5.0,
        sampling_window_size: 100,
        max_interval: Duration::from_secs(2),
        initial_interval: INTERVAL,
        dead_node_grace_period: Duration::from_secs(120),
    };
    c.leave_grace = INTERVAL * 3;
    c
}

async fn start(name: &str, ip: u8, seeds: &[SocketAddr], secret: &str, faults: Option<&FaultInjector>) -> Cluster {
    let mut transport = SecureTransport::new(key(secret));
    if let Some(f) = faults {
        transport = transport.with_fault_injector(f.clone());
    }
    Cluster::start_with_transport(config(name, ip, seeds), transport).await.unwrap()
}

/// Starts `n` nodes on 127.0.0.1..=n, all seeded with the first.
async fn start_cluster(n: u8, faults: Option<&FaultInjector>) -> Vec<Cluster> {
    let first = start("node1", 1, &[], SECRET, faults).await;
    let seed = first.gossip_addr();
    let mut nodes = vec![first];
    for i in 2..=n {
        nodes.push(start(&format!("node{i}"), i, &[seed], SECRET, faults).await);
    }
    nodes
}

async fn wait_for<F, Fut>(what: &str, deadline: Duration, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Names of the members `node` sees in `state`.
async fn names_in(node: &Cluster, state: MemberState) -> Vec<String> {
    node.members().await.into_iter().filter(|m| m.state == state).map(|m| m.id.name.to_string()).collect()
}

async fn all_live(nodes: &[Cluster], expected: usize) -> bool {
    for n in nodes {
        if names_in(n, MemberState::Live).await.len() != expected {
            return false;
        }
    }
    true
}

async fn sees_value(node: &Cluster, of: &str, key: &GossipKey, value: &GossipValue) -> bool {
    let (k, v) = (key.encode().unwrap(), value.encode().unwrap());
    node.with_chitchat(|c| c.node_states().iter().any(|(id, ns)| &*id.node_id == of && ns.get(&k) == Some(v.as_str())))
        .await
}

/// Drains `stream` until `pred` matches a change, or the deadline.
async fn expect_change(stream: &mut ClusterChangeStream, what: &str, pred: impl Fn(&ClusterChange) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.recv()).await {
            Ok(Some(c)) if pred(&c) => return,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("change stream closed while waiting for {what}"),
            Err(_) => panic!("timed out waiting for change: {what}"),
        }
    }
}

fn health(state: ServerHealth) -> GossipValue {
    GossipValue::Health(HealthView { state, since_ms: 1_700_000_000_000 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_converges_and_values_reach_every_node() {
    let nodes = start_cluster(4, None).await;
    let took = wait_for("4 live members on every node", DEADLINE, || all_live(&nodes, 4)).await;
    eprintln!("membership of 4 converged in {took:?}");

    let mut streams: Vec<_> = nodes.iter().map(Cluster::subscribe).collect();
    let key = GossipKey::server("api", "10.0.1.10:8080");
    nodes[1].set(key.clone(), health(ServerHealth::Down)).await.unwrap();
    for (i, stream) in streams.iter_mut().enumerate() {
        if i == 1 {
            continue;
        }
        expect_change(stream, "node2's health view", |c| {
            matches!(c, ClusterChange::Set { node, key: k, value }
                if &*node.name == "node2" && *k == key && *value == health(ServerHealth::Down))
        })
        .await;
    }
    // The publisher's own stream carries other nodes only.
    assert!(std::iter::from_fn(|| streams[1].try_recv()).all(|c| match c {
        ClusterChange::Joined(id) | ClusterChange::Departed(id) => &*id.name != "node2",
        ClusterChange::Set { node, .. } | ClusterChange::Removed { node, .. } => &*node.name != "node2",
    }));

    // Deleting the key reaches the others as a removal.
    nodes[1].delete(&key).await.unwrap();
    expect_change(
        &mut streams[0],
        "removal of node2's key",
        |c| matches!(c, ClusterChange::Removed { node, key: k } if &*node.name == "node2" && *k == key),
    )
    .await;

    for n in &nodes {
        let s = n.transport_stats();
        assert!(s.messages_delivered > 0, "{s:?}");
        assert_eq!(s.dropped(), 0, "no datagram between honest nodes is dropped: {s:?}");
    }
    let members = nodes[0].members().await;
    assert!(members.iter().any(|m| m.is_self && &*m.id.name == "node1"));
    assert!(members.iter().filter(|m| !m.is_self).all(|m| m.last_heard.is_some_and(|d| d < Duration::from_secs(5))));
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_secret_never_joins() {
    let nodes = start_cluster(3, None).await;
    wait_for("3 live members", DEADLINE, || all_live(&nodes, 3)).await;
    let intruder = start("intruder", 9, &[nodes[0].gossip_addr()], OTHER_SECRET, None).await;

    // Wait until the seed has refused a good number of the intruder's datagrams.
    wait_for("auth failures on the seed", DEADLINE, || async { nodes[0].transport_stats().auth_failures() >= 10 })
        .await;
    for n in &nodes {
        let members = n.members().await;
        assert!(members.iter().all(|m| &*m.id.name != "intruder"), "{members:?}");
        assert!(n.transport_stats().messages_delivered > 0);
    }
    let seen = intruder.members().await;
    assert_eq!(seen.len(), 1, "the intruder knows nobody: {seen:?}");
    // The intruder never heard back: the honest nodes did not answer it.
    assert_eq!(intruder.transport_stats().messages_delivered, 0);
    intruder.shutdown().await.unwrap();
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_separates_then_heals_and_values_converge() {
    let faults = FaultInjector::new().with_seed(42);
    let nodes = start_cluster(4, Some(&faults)).await;
    wait_for("4 live members", DEADLINE, || all_live(&nodes, 4)).await;

    let addrs: Vec<SocketAddr> = nodes.iter().map(Cluster::gossip_addr).collect();
    faults.partition([addrs[0], addrs[1]], [addrs[2], addrs[3]]);
    let took = wait_for("each side sees the other dead", DEADLINE, || async {
        names_in(&nodes[0], MemberState::Dead).await.len() == 2
            && names_in(&nodes[2], MemberState::Dead).await.len() == 2
    })
    .await;
    eprintln!("partition detected in {took:?}");

    let key_a = GossipKey::server("api", "s1");
    let key_c = GossipKey::load("api", "s1");
    let load = GossipValue::Load(sysmanage_node::cluster::LoadSummary { sessions: 3, connections: 4 });
    let up = health(ServerHealth::Up);
    nodes[0].set(key_a.clone(), up.clone()).await.unwrap();
    nodes[2].set(key_c.clone(), load.clone()).await.unwrap();
    // Within a side, values flow; across, they do not.
    wait_for("node2 sees node1's value", DEADLINE, || sees_value(&nodes[1], "node1", &key_a, &up)).await;
    wait_for("node4 sees node3's value", DEADLINE, || sees_value(&nodes[3], "node3", &key_c, &load)).await;
    assert!(!sees_value(&nodes[2], "node1", &key_a, &up).await);
    assert!(!sees_value(&nodes[0], "node3", &key_c, &load).await);
    assert!(faults_dropped(&nodes) > 0);

    faults.heal();
    let took = wait_for("healed: all live, values everywhere", DEADLINE, || async {
        if !all_live(&nodes, 4).await {
            return false;
        }
        for n in &nodes {
            if !sees_value(n, "node1", &key_a, &up).await || !sees_value(n, "node3", &key_c, &load).await {
                return false;
            }
        }
        true
    })
    .await;
    eprintln!("partition healed and converged in {took:?}");
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

fn faults_dropped(nodes: &[Cluster]) -> u64 {
    nodes.iter().map(|n| n.transport_stats().fault_dropped).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_is_marked_dead_within_the_detector_bound() {
    let mut nodes = start_cluster(3, None).await;
    wait_for("3 live members", DEADLINE, || all_live(&nodes, 3)).await;
    let mut stream = nodes[0].subscribe();
    let stopped = nodes.pop().unwrap();
    let stopped_id = stopped.self_id();
    stopped.shutdown().await.unwrap();
    let t0 = Instant::now();
    // phi threshold 5 at ~100 ms heartbeat intervals: a few hundred ms to a
    // couple of seconds. 5 s is the bound asserted here.
    let bound = Duration::from_secs(5);
    let took = wait_for("node3 dead on the others", bound, || async {
        for n in &nodes {
            if !names_in(n, MemberState::Dead).await.contains(&"node3".to_string()) {
                return false;
            }
        }
        true
    })
    .await;
    eprintln!("stopped node marked dead in {took:?}");
    expect_change(&mut stream, "node3 departed", |c| matches!(c, ClusterChange::Departed(id) if *id == stopped_id))
        .await;
    assert!(t0.elapsed() < bound + Duration::from_secs(1));
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_is_seen_before_the_node_goes() {
    let mut nodes = start_cluster(3, None).await;
    wait_for("3 live members", DEADLINE, || all_live(&nodes, 3)).await;
    let mut stream = nodes[0].subscribe();
    let leaving = nodes.pop().unwrap();
    leaving.leave().await.unwrap();
    expect_change(
        &mut stream,
        "node3 announced its leave",
        |c| matches!(c, ClusterChange::Set { node, value: GossipValue::Leaving { .. }, .. } if &*node.name == "node3"),
    )
    .await;
    wait_for("node3 left on node1", DEADLINE, || async { names_in(&nodes[0], MemberState::Left).await == ["node3"] })
        .await;
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rejoins_with_a_higher_generation() {
    let mut nodes = start_cluster(2, None).await;
    wait_for("2 live members", DEADLINE, || all_live(&nodes, 2)).await;
    let old = nodes.pop().unwrap();
    let old_id = old.self_id();
    old.shutdown().await.unwrap();
    let seed = nodes[0].gossip_addr();
    let mut cfg = config("node2", 2, &[seed]);
    cfg.generation = Some(old_id.generation + 1);
    let new = Cluster::start_with_transport(cfg, SecureTransport::new(key(SECRET))).await.unwrap();
    wait_for("node2's new generation is live on node1", DEADLINE, || async {
        nodes[0]
            .members()
            .await
            .iter()
            .any(|m| &*m.id.name == "node2" && m.id.generation == old_id.generation + 1 && m.state == MemberState::Live)
    })
    .await;
    new.shutdown().await.unwrap();
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_truncated_and_replayed_datagrams_are_counted_not_fatal() {
    let nodes = start_cluster(1, None).await;
    let target = nodes[0].gossip_addr();
    let attacker = UdpSocket::bind("127.0.0.7:0").unwrap();

    let mut rng = fastrand::Rng::with_seed(3);
    for len in [0usize, 1, 10, 41, 42, 100, 1_400] {
        let junk: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        attacker.send_to(&junk, target).unwrap();
    }
    // Right key, but not a chitchat message: authentic, then invalid.
    let sealer = Sealer::new(key(SECRET));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let valid = sealer.seal(b"not a chitchat envelope", now).unwrap().remove(0);
    attacker.send_to(&valid, target).unwrap();
    attacker.send_to(&valid, target).unwrap(); // replay
    attacker.send_to(&valid[..valid.len() - 1], target).unwrap(); // truncated
    let stale = sealer.seal(b"old", now - 60_000).unwrap().remove(0);
    attacker.send_to(&stale, target).unwrap();
    let future = sealer.seal(b"later", now + 60_000).unwrap().remove(0);
    attacker.send_to(&future, target).unwrap();
    let wrong = Sealer::new(key(OTHER_SECRET)).seal(b"hi", now).unwrap().remove(0);
    attacker.send_to(&wrong, target).unwrap();

    wait_for("every datagram accounted for", DEADLINE, || async {
        let s = nodes[0].transport_stats();
        s.datagrams_received >= 13 && s.dropped() >= 13
    })
    .await;
    let s = nodes[0].transport_stats();
    eprintln!("{s:#?}");
    assert_eq!(s.invalid_payload, 1, "{s:?}");
    assert_eq!(s.replayed, 1, "{s:?}");
    assert_eq!(s.stale, 1, "{s:?}");
    assert_eq!(s.future, 1, "{s:?}");
    assert!(s.auth_failures() >= 2, "{s:?}");
    assert_eq!(s.messages_delivered, 0);

    // The node still gossips: a new peer joins it.
    let other = start("node2", 2, &[target], SECRET, None).await;
    let pair = [nodes.into_iter().next().unwrap(), other];
    wait_for("2 live members after the garbage", DEADLINE, || all_live(&pair, 2)).await;
    for n in pair {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_receives_a_large_state() {
    let nodes = start_cluster(1, None).await;
    // Random session keys compress badly: chitchat needs many full datagrams.
    let mut rng = fastrand::Rng::with_seed(11);
    let n = 3_000;
    let entries: Vec<_> = (0..n)
        .map(|i| {
            let k: String = (0..40).map(|_| rng.digit(16)).collect();
            // A session record's value: `L {expires_ms} {hlc} {origin} {server}`.
            let value = format!("L {} {} node1 s{}", 1_700_000_000_000 + rng.u64(..1_000_000), rng.u64(..), i % 3);
            (GossipKey::session("agents", &k), GossipValue::Session(value))
        })
        .collect();
    nodes[0].set_many(entries).await.unwrap();
    let other = start("node2", 2, &[nodes[0].gossip_addr()], SECRET, None).await;
    let took = wait_for("node2 holds node1's sessions", DEADLINE, || async {
        other
            .with_chitchat(|c| {
                c.node_states()
                    .iter()
                    .find(|(id, _)| &*id.node_id == "node1")
                    .map(|(_, ns)| ns.key_values().filter(|(k, _)| k.starts_with("session:")).count())
                    == Some(n)
            })
            .await
    })
    .await;
    eprintln!("{n} session keys crossed in {took:?}");
    let got = other.transport_stats();
    // 40 random hex digits carry 20 bytes of entropy: no compression gets
    // the keys across in fewer bytes than that.
    assert!(got.bytes_received > (n as u64) * 20, "{got:?}");
    assert_eq!(got.dropped(), 0, "{got:?}");
    other.shutdown().await.unwrap();
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}
