//! The secure transport on its own, through chitchat's `Transport` trait:
//! real UDP sockets on loopback, envelopes in and out.

use std::net::SocketAddr;
use std::time::Duration;

use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatEnvelope, ChitchatMessage, ProtocolVersion};
use sysmanage_node::cluster::{ClusterKey, ClusterSecret, FaultInjector, SecureTransport};

fn key(secret: &str) -> ClusterKey {
    ClusterKey::derive(&ClusterSecret::from_bytes(secret.as_bytes()).unwrap())
}

const SECRET: &str = "c0ffee00c0ffee01c0ffee02c0ffee03d4a59b78";

fn syn(cluster_id: String) -> ChitchatEnvelope {
    ChitchatEnvelope {
        version: ProtocolVersion::V0,
        message: ChitchatMessage::Syn { cluster_id, digest: Default::default() },
    }
}

fn local(ip: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, ip], 0))
}

async fn recv(socket: &mut Box<dyn Socket>) -> Option<chitchat::transport::RecvOutcome> {
    tokio::time::timeout(Duration::from_secs(5), socket.recv()).await.ok().map(|r| r.unwrap())
}

#[tokio::test]
async fn envelopes_cross_and_the_sender_is_the_real_peer() {
    let (ta, tb) = (SecureTransport::new(key(SECRET)), SecureTransport::new(key(SECRET)));
    let mut a = ta.open(local(1)).await.unwrap();
    let mut b = tb.open(local(2)).await.unwrap();
    let (addr_a, addr_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    for i in 0..20 {
        a.send(addr_b, syn(format!("cluster-{i}"))).await.unwrap();
    }
    for i in 0..20 {
        let out = recv(&mut b).await.expect("delivered");
        assert_eq!(out.from_addr, addr_a);
        assert_eq!(out.envelope, syn(format!("cluster-{i}")));
    }
    b.send(addr_a, syn("reply".into())).await.unwrap();
    assert_eq!(recv(&mut a).await.unwrap().envelope, syn("reply".into()));
    let (sa, sb) = (ta.stats(), tb.stats());
    assert_eq!((sa.datagrams_sent, sb.messages_delivered), (20, 20));
    assert_eq!(sb.dropped(), 0);
}

#[tokio::test]
async fn a_message_larger_than_one_datagram_is_split_and_joined() {
    let (ta, tb) = (SecureTransport::new(key(SECRET)), SecureTransport::new(key(SECRET)));
    let mut a = ta.open(local(1)).await.unwrap();
    let mut b = tb.open(local(2)).await.unwrap();
    let addr_b = b.local_addr().unwrap();
    // A SYN whose cluster id nearly fills chitchat's 65,507-byte maximum:
    // with the transport's overhead it needs two datagrams.
    let mut rng = fastrand::Rng::with_seed(5);
    let big: String = (0..65_480).map(|_| rng.alphanumeric()).collect();
    let sent = a.send(addr_b, syn(big.clone())).await.unwrap();
    assert!(sent.num_bytes_sent > 65_507, "{sent:?}");
    let out = recv(&mut b).await.expect("joined");
    assert_eq!(out.envelope, syn(big));
    assert_eq!(ta.stats().messages_split, 1);
    assert_eq!(ta.stats().datagrams_sent, 2);
    assert_eq!(tb.stats().messages_joined, 1);
}

#[tokio::test]
async fn wrong_key_is_dropped_and_counted() {
    let (ta, tb) =
        (SecureTransport::new(key("another cluster's secret, 32 bytes!")), SecureTransport::new(key(SECRET)));
    let mut a = ta.open(local(1)).await.unwrap();
    let mut b = tb.open(local(2)).await.unwrap();
    let addr_b = b.local_addr().unwrap();
    a.send(addr_b, syn("x".into())).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(300), b.recv()).await.is_err(), "nothing delivered");
    assert_eq!(tb.stats().auth_failures(), 1);
    assert_eq!(tb.stats().messages_delivered, 0);
}

#[tokio::test]
async fn fault_injector_drops_delays_and_partitions() {
    let faults = FaultInjector::new().with_seed(9);
    let ta = SecureTransport::new(key(SECRET)).with_fault_injector(faults.clone());
    let tb = SecureTransport::new(key(SECRET));
    let mut a = ta.open(local(1)).await.unwrap();
    let mut b = tb.open(local(2)).await.unwrap();
    let (addr_a, addr_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());

    faults.partition([addr_a], [addr_b]);
    a.send(addr_b, syn("cut".into())).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(200), b.recv()).await.is_err());
    assert_eq!(ta.stats().fault_dropped, 1);
    faults.heal();

    faults.set_delay(Duration::from_millis(150), Duration::ZERO);
    let t0 = std::time::Instant::now();
    a.send(addr_b, syn("late".into())).await.unwrap();
    assert!(t0.elapsed() < Duration::from_millis(100), "send does not wait for the delay");
    assert_eq!(recv(&mut b).await.unwrap().envelope, syn("late".into()));
    assert!(t0.elapsed() >= Duration::from_millis(150));
    assert_eq!(ta.stats().fault_delayed, 1);

    faults.clear();
    faults.set_drop_rate(0.5);
    for i in 0..200 {
        a.send(addr_b, syn(format!("m{i}"))).await.unwrap();
    }
    let dropped = ta.stats().fault_dropped - 1;
    assert!((60..140).contains(&dropped), "{dropped}");
    let mut got = 0;
    while tokio::time::timeout(Duration::from_millis(200), b.recv()).await.is_ok() {
        got += 1;
    }
    assert_eq!(got, 200 - dropped);
}
