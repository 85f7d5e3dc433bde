//! TLS handshake metrics on `/metrics`. The counters are process-wide, so
//! the test runs alone (it holds [`ALONE`]) and reads exact deltas.

use crate::{support, ALONE};

use std::time::Duration;

use http::StatusCode;
use support::tls::*;
use support::*;
use tokio::io::AsyncWriteExt;

const COUNT: &str = "sysmanage_tls_handshake_seconds_count";
const INF: &str = "sysmanage_tls_handshake_seconds_bucket{le=\"+Inf\"}";
const FAILURES: &str = "sysmanage_tls_handshake_failures_total";

#[tokio::test]
async fn handshakes_and_failed_handshakes_are_counted() {
    let _alone = ALONE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path(), "server", &["localhost"]);
    let b = Backend::start("b").await;
    let listeners = listener("https", &format!("tls = {{ {} }}", cert.inline()));
    let node = start_node(&config_listeners(&listeners, &servers(&[(&b, "")]), "", "")).await;
    let addr = node.addr("https").unwrap();

    let before = scrape(&node).await;
    assert!(before.contains("# TYPE sysmanage_tls_handshake_seconds histogram"), "{before}");
    assert!(before.contains("# TYPE sysmanage_tls_handshake_failures_total counter"), "{before}");
    let (count0, failures0) = (metric(&before, COUNT).unwrap(), metric(&before, FAILURES).unwrap());

    for _ in 0..2 {
        let tls = tls_connect(addr, client_trusting(&[&cert], BOTH, &[]), "localhost").await.unwrap();
        // A served request means the node finished (and recorded) the handshake.
        assert_eq!(HttpConn::http1(tls).await.get("localhost", "/").await.0, StatusCode::OK);
    }
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"not a client hello\r\n\r\n").await.unwrap();
    read_to_close(&mut tcp, Duration::from_secs(5)).await.expect("garbage connection closed");

    wait_until(Duration::from_secs(5), "the failed handshake is counted", || async {
        metric(&scrape(&node).await, FAILURES) == Some(failures0 + 1.0)
    })
    .await;
    let after = scrape(&node).await;
    assert_eq!(metric(&after, COUNT), Some(count0 + 2.0), "{after}");
    assert_eq!(metric(&after, INF), Some(count0 + 2.0), "{after}");
    assert!(metric(&after, "sysmanage_tls_handshake_seconds_sum").unwrap() > 0.0, "{after}");
    assert_eq!(metric(&after, FAILURES), Some(failures0 + 1.0), "{after}");
    node.stop().await;
}
