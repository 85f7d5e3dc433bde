//! TLS to the servers of a pool: verified against a CA file, refused when the
//! certificate is not trusted or names another host, accepted unverified only
//! with `insecure_skip_verify = true`.

use crate::support;

use http::StatusCode;
use support::tls::write_cert;
use support::*;

/// A TLS backend: another node with an HTTPS listener answering itself.
async fn tls_backend(cert: &support::tls::CertFiles) -> sysmanage_node::runtime::Node {
    let toml = NodeToml::new()
        .without_admin()
        .listener("https", &format!("tls = {{ {} }}", cert.inline()))
        .tables("[[routes]]\nname = \"hello\"\npath_prefix = \"/\"\nrespond = { status = 200, body = \"tls-backend\" }")
        .to_string();
    start_node(&toml).await
}

fn front(backend: std::net::SocketAddr, tls: &str) -> String {
    config(&format!("retries = 0\nmax_fails = 0\n{tls}\nservers = [{{ addr = \"{backend}\" }}]"), "")
}

#[tokio::test]
async fn pools_speak_verified_tls_to_their_servers() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path(), "backend", &["127.0.0.1", "backend.test"]);
    let backend = tls_backend(&cert).await;
    let baddr = backend.addr("https").unwrap();
    let c = client();
    let ca = format!("ca_file = \"{}\"", cert.cert.display());

    let cases = [
        // Trusted through the CA file, name = the server's IP.
        (format!("tls = {{ {ca} }}"), StatusCode::OK),
        // The certificate's other name, given explicitly.
        (format!("tls = {{ {ca}, server_name = \"backend.test\" }}"), StatusCode::OK),
        // A name the certificate does not have.
        (format!("tls = {{ {ca}, server_name = \"other.test\" }}"), StatusCode::BAD_GATEWAY),
        // System roots do not know a self-signed certificate.
        ("tls = {}".to_string(), StatusCode::BAD_GATEWAY),
        // Written out explicitly: any certificate.
        ("tls = { insecure_skip_verify = true }".to_string(), StatusCode::OK),
        // No TLS at all against a TLS server.
        (String::new(), StatusCode::BAD_GATEWAY),
    ];
    for (tls, want) in cases {
        let node = start_node(&front(baddr, &tls)).await;
        let (status, _, body) = get(&c, node.addr("http").unwrap(), "/x").await;
        assert_eq!(status, want, "{tls:?}: {body}");
        if want == StatusCode::OK {
            assert_eq!(body, "tls-backend");
        }
        node.stop().await;
    }
    backend.stop().await;
}

#[test]
fn upstream_tls_settings_are_validated() {
    let bad = front("127.0.0.1:1".parse().unwrap(), "tls = { ca_file = \"/nonexistent/ca.pem\" }");
    let e = sysmanage_node::config::parse_str(&bad, "node.toml", std::path::Path::new(".")).unwrap_err().to_string();
    assert!(e.contains("pools[0].tls.ca_file") && e.contains("/nonexistent/ca.pem"), "{e}");
    let both = front("127.0.0.1:1".parse().unwrap(), "tls = { ca_file = \"x.pem\", insecure_skip_verify = true }");
    let e = sysmanage_node::config::parse_str(&both, "node.toml", std::path::Path::new(".")).unwrap_err().to_string();
    assert!(e.contains("set either ca_file or insecure_skip_verify = true, not both"), "{e}");
}

/// The first server of the first pool in a node's `/api/v1/status`.
async fn first_server(node: &sysmanage_node::runtime::Node) -> sysmanage_node::api::ServerStatus {
    let (status, _, body) = get(&client(), node.admin.unwrap(), "/api/v1/status").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let s: sysmanage_node::api::Status = serde_json::from_str(&body).unwrap();
    s.pools[0].servers[0].clone()
}

/// A TLS backend whose health endpoint says `healthy`.
async fn tls_backend_with_health(cert: &support::tls::CertFiles) -> sysmanage_node::runtime::Node {
    let toml = NodeToml::new()
        .without_admin()
        .listener("https", &format!("tls = {{ {} }}", cert.inline()))
        .tables(
            "[[routes]]\nname = \"health\"\npath = \"/api/health\"\nrespond = { status = 200, body = \"healthy\" }\n\
             [[routes]]\nname = \"hello\"\npath_prefix = \"/\"\nrespond = { status = 200, body = \"tls-backend\" }",
        )
        .to_string();
    start_node(&toml).await
}

const QUICK: &str = "interval = \"100ms\", timeout = \"1s\", fall = 1, rise = 1";

#[tokio::test]
async fn health_checks_speak_the_pools_tls_and_can_be_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path(), "backend", &["127.0.0.1"]);
    let backend = tls_backend_with_health(&cert).await;
    let baddr = backend.addr("https").unwrap();
    let ca = format!("ca_file = \"{}\"", cert.cert.display());

    // An HTTP check over the pool's TLS reaches /api/health and reads its body.
    let checked = |checks: &str, tls: &str| {
        config(
            &format!("retries = 0\nmax_fails = 0\n{tls}\nchecks = [{checks}]\nservers = [{{ addr = \"{baddr}\" }}]"),
            "",
        )
    };
    let node = start_node(&checked(
        &format!("{{ path = \"/api/health\", expect_body = \"healthy\", {QUICK} }}"),
        &format!("tls = {{ {ca} }}"),
    ))
    .await;
    wait_until(std::time::Duration::from_secs(5), "checks over TLS to pass", || async {
        let s = first_server(&node).await;
        s.checks_ok >= 3 && s.state == "up"
    })
    .await;
    assert_eq!(first_server(&node).await.checks_failed, 0);
    let (status, _, body) = get(&client(), node.addr("http").unwrap(), "/x").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "tls-backend"));
    node.stop().await;

    // A TCP check on a TLS pool completes the handshake: with a certificate
    // the pool does not trust, the server is down, as requests would fail.
    let node = start_node(&checked(&format!("{{ type = \"tcp\", {QUICK} }}"), "tls = {}")).await;
    wait_until(std::time::Duration::from_secs(5), "an untrusted server to be down", || async {
        let s = first_server(&node).await;
        s.checks_failed >= 1 && s.state == "down"
    })
    .await;
    node.stop().await;

    // `tls = false` on the check: plain HTTP to a TLS-only server fails,
    // although the pool's own TLS would pass.
    let node = start_node(&checked(
        &format!("{{ path = \"/api/health\", tls = false, {QUICK} }}"),
        &format!("tls = {{ {ca} }}"),
    ))
    .await;
    wait_until(std::time::Duration::from_secs(5), "plain checks to fail", || async {
        let s = first_server(&node).await;
        s.checks_failed >= 1 && s.state == "down"
    })
    .await;
    assert_eq!(first_server(&node).await.checks_ok, 0);
    node.stop().await;
    backend.stop().await;

    // `tls = true` needs the pool's TLS.
    let bad = checked(&format!("{{ path = \"/\", tls = true, {QUICK} }}"), "");
    let e = sysmanage_node::config::parse_str(&bad, "node.toml", std::path::Path::new(".")).unwrap_err().to_string();
    assert!(e.contains("pools[0].checks[0].tls: the pool has no `tls` table to check with"), "{e}");
}
