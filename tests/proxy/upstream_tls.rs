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
