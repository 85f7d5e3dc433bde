//! TLS listeners through a real node: HTTPS to a plain backend, HSTS, ALPN,
//! SNI, protocol versions (including a hand-made TLS 1.0 ClientHello),
//! certificate hot swap through the reload API, and bad input.

use crate::support;

use std::time::Duration;

use http::{Method, Request, StatusCode, Version};
use support::tls::*;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const TOKEN: &str = "tls-test-token";
const HSTS_DEFAULT: &str = "max-age=31536000; includeSubDomains";

/// `[[listeners]]` "https" with `tls = { <tls> }` and a plain "http" one.
fn https_and_http(tls: &str) -> String {
    listener("https", &format!("tls = {{ {tls} }}")) + &listener("http", "")
}

#[tokio::test]
async fn https_reaches_a_plain_backend_with_forwarded_proto_and_hsts_only_on_tls() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path(), "server", &["localhost"]);
    let b = Backend::start("b").await;
    let node = start_node(&config_listeners(&https_and_http(&cert.inline()), &servers(&[(&b, "")]), "", "")).await;

    let tls =
        tls_connect(node.addr("https").unwrap(), client_trusting(&[&cert], BOTH, &[]), "localhost").await.unwrap();
    assert_eq!(peer_leaf(&tls), cert.der);
    let mut conn = HttpConn::http1(tls).await;
    let (status, _, headers, body) = conn.get("localhost", "/echo").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-backend"], "b");
    let seen = b.last_headers();
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["x-real-ip"], "127.0.0.1");
    assert_eq!(b.last_version(), "HTTP/1.1");
    assert_eq!(headers["strict-transport-security"], HSTS_DEFAULT);
    assert_eq!(headers["x-frame-options"], "DENY", "security headers on HTTPS too");

    // The same node's plain listener: no HSTS (RFC 6797 §7.2), proto http.
    let (status, headers, _) = get(&client(), node.addr("http").unwrap(), "/echo").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.contains_key("strict-transport-security"), "{headers:?}");
    assert_eq!(b.last_headers()["x-forwarded-proto"], "http");
    node.stop().await;
}

#[tokio::test]
async fn hsts_value_is_configurable_and_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path(), "server", &["localhost"]);
    let b = Backend::start("b").await;
    for (headers_table, want) in
        [("[headers]\nhsts = \"max-age=60\"", Some("max-age=60")), ("[headers]\nhsts = \"\"", None)]
    {
        let cfg = config_listeners(&https_and_http(&cert.inline()), &servers(&[(&b, "")]), headers_table, "");
        let node = start_node(&cfg).await;
        let tls = tls_connect(node.addr("https").unwrap(), client_trusting(&[&cert], BOTH, &[]), "localhost").await;
        let (status, _, headers, _) = HttpConn::http1(tls.unwrap()).await.get("localhost", "/").await;
        assert_eq!(status, StatusCode::OK);
        let got = headers.get("strict-transport-security").map(|v| v.to_str().unwrap());
        assert_eq!(got, want, "{headers_table}");
        node.stop().await;
    }
}

#[tokio::test]
async fn alpn_h2_gives_http2_and_http11_only_gives_http11() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path(), "server", &["localhost"]);
    let b = Backend::start("b").await;
    let node = start_node(&config_listeners(&https_and_http(&cert.inline()), &servers(&[(&b, "")]), "", "")).await;
    let addr = node.addr("https").unwrap();

    let tls = tls_connect(addr, client_trusting(&[&cert], BOTH, &[b"h2", b"http/1.1"]), "localhost").await.unwrap();
    assert_eq!(alpn(&tls).as_deref(), Some(&b"h2"[..]));
    let mut h2 = HttpConn::http2(tls).await;
    let (status, version, headers, body) = h2.get("localhost", "/echo").await;
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_2), "{body}");
    assert_eq!(headers["strict-transport-security"], HSTS_DEFAULT);
    // The backend still gets HTTP/1.1, with :authority as Host.
    assert_eq!(b.last_version(), "HTTP/1.1");
    assert_eq!(b.last_headers()["host"], "localhost");
    assert_eq!(b.last_headers()["x-forwarded-proto"], "https");
    // Several streams on the one connection.
    for _ in 0..3 {
        assert_eq!(h2.get("localhost", "/").await.0, StatusCode::OK);
    }

    let tls = tls_connect(addr, client_trusting(&[&cert], BOTH, &[b"http/1.1"]), "localhost").await.unwrap();
    assert_eq!(alpn(&tls).as_deref(), Some(&b"http/1.1"[..]));
    let (status, version, _, _) = HttpConn::http1(tls).await.get("localhost", "/").await;
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_11));

    // No ALPN at all: nothing negotiated, HTTP/1.1 still works.
    let tls = tls_connect(addr, client_trusting(&[&cert], BOTH, &[]), "localhost").await.unwrap();
    assert_eq!(alpn(&tls), None);
    let (status, version, _, _) = HttpConn::http1(tls).await.get("localhost", "/").await;
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_11));
    node.stop().await;
}

#[tokio::test]
async fn sni_picks_each_certificate_and_unknown_names_get_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_cert(dir.path(), "a", &["a.test"]);
    let b_cert = write_cert(dir.path(), "b", &["b.test"]);
    let tls_table = format!(
        "certificates = [{{ {}, names = [\"a.test\"] }}, {{ {}, names = [\"b.test\"] }}]",
        a.inline(),
        b_cert.inline()
    );
    let b = Backend::start("b").await;
    let node = start_node(&config_listeners(&https_and_http(&tls_table), &servers(&[(&b, "")]), "", "")).await;
    let addr = node.addr("https").unwrap();
    assert_ne!(a.der, b_cert.der);

    // Verified against the name asked for: each client trusts only its own.
    for (name, want) in [("a.test", &a), ("b.test", &b_cert)] {
        let tls = tls_connect(addr, client_trusting(&[want], BOTH, &[]), name).await.unwrap();
        assert!(peer_leaf(&tls) == want.der, "{name} got the other certificate");
        let (status, _, _, _) = HttpConn::http1(tls).await.get(name, "/").await;
        assert_eq!(status, StatusCode::OK);
    }
    // A client trusting only b asking for a gets a's certificate and refuses it.
    assert!(tls_connect(addr, client_trusting(&[&b_cert], BOTH, &[]), "a.test").await.is_err());

    // An unknown name (and no SNI at all, by IP) gets the first certificate.
    let tls = tls_connect(addr, client_accepting_any(&[]), "unknown.test").await.unwrap();
    assert!(peer_leaf(&tls) == a.der, "unknown name did not get the default certificate");
    let tls = tls_connect(addr, client_accepting_any(&[]), "127.0.0.1").await.unwrap();
    assert!(peer_leaf(&tls) == a.der, "no SNI did not get the default certificate");
    node.stop().await;
}

/// A ClientHello as a pre-TLS 1.2 client sends it: record and hello
/// version 3.`minor` (1: TLS 1.0, 2: TLS 1.1), no `supported_versions`
/// extension, TLS 1.0-era suites; `signature_algorithms` (a TLS 1.2
/// extension some such clients send anyway) only if `sigalgs`.
fn old_client_hello(minor: u8, sigalgs: bool) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
    let mut hello = vec![0x03, minor]; // client_version
    hello.extend_from_slice(&[0x5a; 32]); // random
    hello.push(0); // no session id
                   // ECDHE-ECDSA-AES128-SHA, ECDHE-RSA-AES128-SHA, AES128-SHA, AES256-SHA
    let suites: [u16; 4] = [0xc009, 0xc013, 0x002f, 0x0035];
    hello.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        hello.extend_from_slice(&s.to_be_bytes());
    }
    hello.extend_from_slice(&[1, 0]); // compression: null
    let mut exts = Vec::new();
    let host = b"localhost";
    let mut sni = ((host.len() + 3) as u16).to_be_bytes().to_vec();
    sni.push(0);
    sni.extend_from_slice(&(host.len() as u16).to_be_bytes());
    sni.extend_from_slice(host);
    ext(&mut exts, 0x0000, &sni); // server_name
    ext(&mut exts, 0x000a, &[0x00, 0x04, 0x00, 0x17, 0x00, 0x1d]); // groups: secp256r1, x25519
    ext(&mut exts, 0x000b, &[0x01, 0x00]); // ec_point_formats: uncompressed
    if sigalgs {
        ext(&mut exts, 0x000d, &[0x00, 0x04, 0x04, 0x03, 0x08, 0x04]); // ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256
    }
    hello.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    hello.extend_from_slice(&exts);

    let mut handshake = vec![0x01]; // ClientHello
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01]; // handshake record, 3.1 as clients send it
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Sends `hello` and returns the alert description of the fatal alert the
/// node answers with, after checking that nothing else came and the
/// connection closed.
async fn fatal_alert_for(addr: std::net::SocketAddr, hello: &[u8]) -> u8 {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(hello).await.unwrap();
    let answer = read_to_close(&mut tcp, Duration::from_secs(5)).await.expect("node left the connection open");
    // One record: type 21 (alert), version, length 2, level 2 (fatal), description.
    assert_eq!(answer.len(), 7, "not exactly one alert record: {answer:02x?}");
    assert_eq!(answer[0], 0x15, "not an alert record: {answer:02x?}");
    assert_eq!(&answer[3..6], &[0x00, 0x02, 0x02], "not a fatal alert: {answer:02x?}");
    answer[6]
}

const HANDSHAKE_FAILURE: u8 = 40;
const PROTOCOL_VERSION: u8 = 70;

#[tokio::test]
async fn tls10_and_11_are_refused_and_12_13_work_unless_restricted() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path(), "server", &["localhost"]);
    let b = Backend::start("b").await;
    let tls13_only = listener("only13", &format!("tls = {{ {}, protocols = [\"TLSv1.3\"] }}", cert.inline()));
    let listeners = https_and_http(&cert.inline()) + &tls13_only;
    let node = start_node(&config_listeners(&listeners, &servers(&[(&b, "")]), "", "")).await;
    let addr = node.addr("https").unwrap();

    // A TLS 1.1 hello with the extensions rustls needs: refused for its
    // version, with protocol_version.
    assert_eq!(fatal_alert_for(addr, &old_client_hello(2, true)).await, PROTOCOL_VERSION);
    // A plain TLS 1.0 hello has no signature_algorithms (a TLS 1.2
    // extension); rustls refuses it for that first, with handshake_failure.
    // Either way: a fatal alert, no ServerHello, connection closed.
    let alert = fatal_alert_for(addr, &old_client_hello(1, false)).await;
    assert!([HANDSHAKE_FAILURE, PROTOCOL_VERSION].contains(&alert), "alert {alert}");
    assert_eq!(fatal_alert_for(addr, &old_client_hello(1, true)).await, PROTOCOL_VERSION);
    assert_eq!(b.hits(), 0);

    for (versions, want) in [(ONLY_12, rustls::ProtocolVersion::TLSv1_2), (ONLY_13, rustls::ProtocolVersion::TLSv1_3)] {
        let tls = tls_connect(addr, client_trusting(&[&cert], versions, &[]), "localhost").await.unwrap();
        assert_eq!(tls_version(&tls), Some(want));
        assert_eq!(HttpConn::http1(tls).await.get("localhost", "/").await.0, StatusCode::OK);
    }

    // protocols = ["TLSv1.3"]: a TLS 1.2-only client fails, 1.3 works.
    let only13 = node.addr("only13").unwrap();
    let err = tls_connect(only13, client_trusting(&[&cert], ONLY_12, &[]), "localhost").await.unwrap_err();
    assert!(err.to_string().contains("ProtocolVersion"), "{err}");
    let tls = tls_connect(only13, client_trusting(&[&cert], BOTH, &[]), "localhost").await.unwrap();
    assert_eq!(tls_version(&tls), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(HttpConn::http1(tls).await.get("localhost", "/").await.0, StatusCode::OK);
    node.stop().await;
}

#[tokio::test]
async fn reload_api_swaps_the_certificate_while_an_open_connection_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let old = write_cert(dir.path(), "server", &["localhost"]);
    let token = dir.path().join("admin.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let b = Backend::start("b").await;
    let cfg = config_listeners(
        &https_and_http(&old.inline()),
        &servers(&[(&b, "")]),
        "",
        &format!("token_file = \"{}\"", token.display()),
    );
    let (node, _cfg_dir, _) = start_node_file(&cfg).await;
    let addr = node.addr("https").unwrap();

    let tls = tls_connect(addr, client_trusting(&[&old], BOTH, &[]), "localhost").await.unwrap();
    assert_eq!(peer_leaf(&tls), old.der);
    let mut kept = HttpConn::http1(tls).await;
    assert_eq!(kept.get("localhost", "/").await.0, StatusCode::OK);

    // Renewal: new key and certificate under the same file names.
    let new = write_cert(dir.path(), "server", &["localhost"]);
    assert_ne!(new.serial(), old.serial());
    let admin = node.admin.unwrap();
    let reload = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{admin}/api/v1/reload"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let (status, _, body) = send(&client(), reload).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!body.contains("certificates not reloaded"), "{body}");

    // A new handshake (fresh client: no session to resume) sees the new one.
    let tls = tls_connect(addr, client_trusting(&[&new], BOTH, &[]), "localhost").await.unwrap();
    let leaf = peer_leaf(&tls);
    assert_eq!(serial_of(&leaf), new.serial());
    assert_eq!(leaf, new.der);
    assert_eq!(HttpConn::http1(tls).await.get("localhost", "/").await.0, StatusCode::OK);
    // A client that trusts only the old certificate is now refused.
    assert!(tls_connect(addr, client_trusting(&[&old], BOTH, &[]), "localhost").await.is_err());

    // The connection made before the swap still serves requests.
    let (status, _, _, body) = kept.get("localhost", "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "b"));
    node.stop().await;
}

/// `Node::start`'s error as `sysmanage-node run` prints it (`{:#}`).
async fn start_error(cfg: &str) -> String {
    let parsed = sysmanage_node::config::parse_str(cfg, "test.toml", std::path::Path::new(".")).unwrap();
    match sysmanage_node::runtime::Node::start(parsed).await {
        Ok(node) => {
            node.stop().await;
            panic!("node started with:\n{cfg}");
        }
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn start_errors_name_the_missing_file_or_the_busy_address_once() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path(), "server", &["localhost"]);
    let missing = dir.path().join("nope.pem");
    let b = Backend::start("b").await;
    for (tls, role) in [
        (format!("cert = \"{}\", key = \"{}\"", missing.display(), cert.key.display()), "certificate file"),
        (format!("cert = \"{}\", key = \"{}\"", cert.cert.display(), missing.display()), "private key file"),
    ] {
        let err = start_error(&config_listeners(&https_and_http(&tls), &servers(&[(&b, "")]), "", "")).await;
        assert_eq!(err, format!("listener https: TLS: {role} {}: not found", missing.display()));
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let listeners = format!("[[listeners]]\nname = \"http\"\nbind = \"{addr}\"\n");
    let err = start_error(&config_listeners(&listeners, &servers(&[(&b, "")]), "", "")).await;
    assert!(err.starts_with(&format!("cannot listen on {addr} (listener http): ")), "{err}");
    assert_eq!(err.matches("Address already in use").count(), 1, "cause missing or repeated: {err}");
}

#[tokio::test]
async fn garbage_instead_of_a_client_hello_closes_that_connection_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path(), "server", &["localhost"]);
    let b = Backend::start("b").await;
    let node = start_node(&config_listeners(&https_and_http(&cert.inline()), &servers(&[(&b, "")]), "", "")).await;
    let addr = node.addr("https").unwrap();
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00],
        &[0xff; 64],
    ] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(garbage).await.unwrap();
        let answer = read_to_close(&mut tcp, Duration::from_secs(5)).await.expect("connection left open");
        assert!(!answer.starts_with(b"HTTP/"), "an HTTP answer to {garbage:02x?}");
        // Whatever came back, if anything, is a TLS alert record.
        assert!(answer.is_empty() || answer[0] == 0x15, "{garbage:02x?} -> {answer:02x?}");
    }
    // The node still handshakes and serves normally.
    let tls = tls_connect(addr, client_trusting(&[&cert], BOTH, &[]), "localhost").await.unwrap();
    assert_eq!(HttpConn::http1(tls).await.get("localhost", "/").await.0, StatusCode::OK);
    assert_eq!(b.hits(), 1, "garbage reached the backend");
    node.stop().await;
}

#[tokio::test]
async fn a_silent_client_is_cut_off_at_header_timeout_during_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path(), "server", &["localhost"]);
    let b = Backend::start("b").await;
    let cfg = config_listeners(
        &https_and_http(&cert.inline()),
        &servers(&[(&b, "")]),
        "[limits]\nheader_timeout = \"500ms\"",
        "",
    );
    let node = start_node(&cfg).await;
    let mut tcp = TcpStream::connect(node.addr("https").unwrap()).await.unwrap();
    let started = std::time::Instant::now();
    let answer = read_to_close(&mut tcp, Duration::from_secs(4)).await.expect("silent client never cut off");
    let after = started.elapsed();
    assert!(answer.is_empty(), "{answer:02x?}");
    assert!(after >= Duration::from_millis(400) && after < Duration::from_secs(3), "cut off after {after:?}");
    node.stop().await;
}

#[tokio::test]
async fn proxy_protocol_header_before_the_tls_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path(), "server", &["localhost"]);
    let b = Backend::start("b").await;
    let listeners = listener("https", &format!("accept_proxy_protocol = true\ntls = {{ {} }}", cert.inline()));
    let node = start_node(&config_listeners(&listeners, &servers(&[(&b, "")]), "", "")).await;
    let addr = node.addr("https").unwrap();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let header = sysmanage_node::proxy_protocol::encode_v2("198.51.100.20:40000".parse().unwrap(), addr);
    tcp.write_all(&header).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_trusting(&[&cert], BOTH, &[]));
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp)).await.unwrap().unwrap();
    let (status, _, _, _) = HttpConn::http1(tls).await.get("localhost", "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(b.last_headers()["x-real-ip"], "198.51.100.20");
    assert_eq!(b.last_headers()["x-forwarded-proto"], "https");
    node.stop().await;
}

#[tokio::test]
async fn self_signed_listener_generates_its_certificate_into_data_dir_and_reuses_it() {
    let data = tempfile::tempdir().unwrap();
    let b = Backend::start("b").await;
    let node_table = format!("[node]\ndata_dir = \"{}\"", data.path().display());
    let cfg = config_listeners(
        &https_and_http("self_signed = true, hosts = [\"localhost\", \"127.0.0.1\"]"),
        &servers(&[(&b, "")]),
        &node_table,
        "",
    );
    let node = start_node(&cfg).await;
    let written = data.path().join("tls").join(sysmanage_node::tls::SELF_SIGNED_CERT_FILE);
    let der = sysmanage_node::tls::load_cert_chain(&written).expect("certificate written").remove(0);
    let files = CertFiles { cert: written.clone(), key: written.with_extension("key"), der: der.clone() };
    // Trusting the written file is enough to verify the node as "localhost".
    let tls =
        tls_connect(node.addr("https").unwrap(), client_trusting(&[&files], BOTH, &[]), "localhost").await.unwrap();
    assert_eq!(peer_leaf(&tls), der);
    assert_eq!(HttpConn::http1(tls).await.get("localhost", "/").await.0, StatusCode::OK);
    node.stop().await;

    // A restart reuses the certificate rather than making a new one.
    let node = start_node(&cfg).await;
    let tls =
        tls_connect(node.addr("https").unwrap(), client_trusting(&[&files], BOTH, &[]), "localhost").await.unwrap();
    assert_eq!(peer_leaf(&tls), der);
    node.stop().await;
}
