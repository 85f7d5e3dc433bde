//! TLS over real loopback sockets: the server config and certificate store
//! from `sysmanage_node::tls` behind an echo server on the node's own
//! server stream (`tls::accept`), and rustls
//! clients checking what was negotiated (ALPN, version, suite, certificate).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::ServerName;
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use sysmanage_node::tls::{
    self, generate_self_signed, generate_self_signed_with_validity, server_config, upstream_config, CertSource,
    CertStore, ServerTlsOptions, TlsError, TlsWarning, UpstreamTlsOptions,
};

const WAIT: Duration = Duration::from_secs(5);

fn hosts(list: &[&str]) -> Vec<String> {
    list.iter().map(|h| h.to_string()).collect()
}

/// Write-and-rename, as certificate renewal tools do.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A fresh certificate and key for `names`, written as `stem.crt` / `stem.key`.
fn pair(dir: &Path, stem: &str, names: &[&str]) -> CertSource {
    let (cert, key) = generate_self_signed(&hosts(names)).unwrap();
    let source = CertSource::new(dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
    replace(&source.cert, &cert);
    replace(&source.key, &key);
    source
}

/// A CA file trusting every certificate given (self-signed: each is its own anchor).
fn ca_file(dir: &Path, name: &str, certs: &[&Path]) -> PathBuf {
    let pem: String = certs.iter().map(|c| std::fs::read_to_string(c).unwrap()).collect();
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

fn client(ca: &Path, versions: &[&'static SupportedProtocolVersion], alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let roots: RootCertStore = tls::load_ca_roots(ca).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// An echo server on 127.0.0.1:0 that lives as long as the test's runtime.
async fn echo_server(config: Arc<ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let config = config.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = tls::accept(config, tcp).await else { return };
                // As hyper does before it has anything to write.
                if tls.flush().await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tls.write_all(&buf[..n]).await.is_err() || tls.flush().await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn connect(addr: SocketAddr, config: Arc<ClientConfig>, name: &str) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio::time::timeout(WAIT, TlsConnector::from(config).connect(name, tcp)).await.expect("handshake timed out")
}

async fn echo(tls: &mut TlsStream<TcpStream>, msg: &[u8]) {
    tls.write_all(msg).await.unwrap();
    tls.flush().await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(WAIT, tls.read_exact(&mut back)).await.expect("echo timed out").unwrap();
    assert_eq!(back, msg);
}

fn alpn(tls: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

fn version(tls: &TlsStream<TcpStream>) -> Option<ProtocolVersion> {
    tls.get_ref().1.protocol_version()
}

fn suite(tls: &TlsStream<TcpStream>) -> &'static str {
    tls.get_ref().1.negotiated_cipher_suite().and_then(|s| s.suite().as_str()).unwrap_or("?")
}

/// The presented leaf certificate equals the one in `cert_file`.
fn presented(tls: &TlsStream<TcpStream>, cert_file: &Path) -> bool {
    let chain = tls.get_ref().1.peer_certificates().unwrap();
    chain[0] == tls::load_cert_chain(cert_file).unwrap()[0]
}

/// One certificate for `localhost` / 127.0.0.1, a server with `opts` over it.
async fn server_with(dir: &Path, opts: ServerTlsOptions) -> (SocketAddr, PathBuf) {
    let source = pair(dir, "server", &["localhost", "127.0.0.1"]);
    let (store, warnings) = CertStore::load(vec![source.clone()]).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let (config, warnings) = server_config(Arc::new(store), &opts).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    (echo_server(config).await, source.cert)
}

#[test]
fn install_crypto_provider_is_idempotent() {
    tls::install_crypto_provider();
    tls::install_crypto_provider();
    let provider = rustls::crypto::CryptoProvider::get_default().expect("installed");
    assert!(!provider.cipher_suites.is_empty());
}

#[tokio::test]
async fn alpn_negotiates_h2_and_http11() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, cert) = server_with(dir.path(), ServerTlsOptions::default()).await;
    let both = client(&cert, &[&TLS13, &TLS12], &[b"h2", b"http/1.1"]);
    let mut tls = connect(addr, both, "localhost").await.unwrap();
    assert_eq!(alpn(&tls).as_deref(), Some(&b"h2"[..]));
    echo(&mut tls, b"ping").await;

    let h1 = client(&cert, &[&TLS13, &TLS12], &[b"http/1.1"]);
    let mut tls = connect(addr, h1, "localhost").await.unwrap();
    assert_eq!(alpn(&tls).as_deref(), Some(&b"http/1.1"[..]));
    echo(&mut tls, b"ping").await;

    // Over TLS 1.2 too; the server's preference order decides.
    let client_prefers_h1 = client(&cert, &[&TLS12], &[b"http/1.1", b"h2"]);
    let tls = connect(addr, client_prefers_h1, "localhost").await.unwrap();
    assert_eq!(alpn(&tls).as_deref(), Some(&b"h2"[..]));

    let none = client(&cert, &[&TLS13], &[]);
    let tls = connect(addr, none, "127.0.0.1").await.unwrap();
    assert_eq!(alpn(&tls), None);
}

#[tokio::test]
async fn tls12_and_tls13_both_work_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, cert) = server_with(dir.path(), ServerTlsOptions::default()).await;
    let mut tls = connect(addr, client(&cert, &[&TLS13], &[]), "localhost").await.unwrap();
    assert_eq!(version(&tls), Some(ProtocolVersion::TLSv1_3));
    echo(&mut tls, b"1.3").await;
    let mut tls = connect(addr, client(&cert, &[&TLS12], &[]), "localhost").await.unwrap();
    assert_eq!(version(&tls), Some(ProtocolVersion::TLSv1_2));
    echo(&mut tls, b"1.2").await;
}

#[tokio::test]
async fn protocol_constraints_hold() {
    let dir = tempfile::tempdir().unwrap();
    let only13 = ServerTlsOptions { protocols: hosts(&["TLSv1.3"]), ..Default::default() };
    let (addr, cert) = server_with(dir.path(), only13).await;
    assert!(connect(addr, client(&cert, &[&TLS12], &[]), "localhost").await.is_err());
    let tls = connect(addr, client(&cert, &[&TLS13, &TLS12], &[]), "localhost").await.unwrap();
    assert_eq!(version(&tls), Some(ProtocolVersion::TLSv1_3));

    let dir = tempfile::tempdir().unwrap();
    let only12 = ServerTlsOptions { protocols: hosts(&["TLSv1.2"]), ..Default::default() };
    let (addr, cert) = server_with(dir.path(), only12).await;
    assert!(connect(addr, client(&cert, &[&TLS13], &[]), "localhost").await.is_err());
    let tls = connect(addr, client(&cert, &[&TLS13, &TLS12], &[]), "localhost").await.unwrap();
    assert_eq!(version(&tls), Some(ProtocolVersion::TLSv1_2));
}

#[tokio::test]
async fn configured_cipher_suites_are_the_ones_negotiated() {
    // The generated certificate is ECDSA, so the ECDSA suites apply.
    let dir = tempfile::tempdir().unwrap();
    let opts = ServerTlsOptions {
        protocols: hosts(&["TLSv1.2"]),
        ciphers: hosts(&["ECDHE-ECDSA-CHACHA20-POLY1305"]),
        ..Default::default()
    };
    let (addr, cert) = server_with(dir.path(), opts).await;
    let tls = connect(addr, client(&cert, &[&TLS12], &[]), "localhost").await.unwrap();
    assert_eq!(suite(&tls), "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256");

    let dir = tempfile::tempdir().unwrap();
    let opts = ServerTlsOptions {
        ciphers: hosts(&["TLS_CHACHA20_POLY1305_SHA256:ECDHE-ECDSA-AES128-GCM-SHA256"]),
        ..Default::default()
    };
    let (addr, cert) = server_with(dir.path(), opts).await;
    let tls = connect(addr, client(&cert, &[&TLS13], &[]), "localhost").await.unwrap();
    assert_eq!(suite(&tls), "TLS13_CHACHA20_POLY1305_SHA256");
    let tls = connect(addr, client(&cert, &[&TLS12], &[]), "localhost").await.unwrap();
    assert_eq!(suite(&tls), "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
}

#[tokio::test]
async fn cipher_and_protocol_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let source = pair(dir.path(), "s", &["localhost"]);
    let store = Arc::new(CertStore::load(vec![source]).unwrap().0);
    let err = |opts: ServerTlsOptions| server_config(store.clone(), &opts).unwrap_err().to_string();
    let unknown = err(ServerTlsOptions { ciphers: hosts(&["ECDHE-RSA-AES128-SHA"]), ..Default::default() });
    assert!(
        unknown.starts_with(
            "cipher suite \"ECDHE-RSA-AES128-SHA\": not available: rustls implements only AEAD suites with forward secrecy"
        ),
        "{unknown}"
    );
    assert_eq!(
        err(ServerTlsOptions { protocols: hosts(&["TLSv1"]), ..Default::default() }),
        "TLS protocol \"TLSv1\" is not supported: use \"TLSv1.2\" and/or \"TLSv1.3\""
    );
    let (_, warnings) = server_config(
        store,
        &ServerTlsOptions { ciphers: hosts(&["DHE-RSA-AES256-GCM-SHA384"]), ..Default::default() },
    )
    .unwrap();
    assert_eq!(
        warnings,
        [TlsWarning::CipherSubstituted {
            requested: "DHE-RSA-AES256-GCM-SHA384".into(),
            used: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
        }]
    );
}

#[tokio::test]
async fn sni_picks_the_certificate_and_falls_back_to_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let default = pair(dir.path(), "default", &["default.test", "127.0.0.1"]);
    let b = pair(dir.path(), "b", &["b.test", "*.apps.test"]);
    let (store, warnings) = CertStore::load(vec![default.clone(), b.clone()]).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let (config, _) = server_config(Arc::new(store), &ServerTlsOptions::default()).unwrap();
    let addr = echo_server(config).await;
    let ca = ca_file(dir.path(), "ca.pem", &[&default.cert, &b.cert]);
    let verifying = client(&ca, &[&TLS13, &TLS12], &[]);

    let mut tls = connect(addr, verifying.clone(), "b.test").await.unwrap();
    assert!(presented(&tls, &b.cert));
    echo(&mut tls, b"b").await;
    let tls = connect(addr, verifying.clone(), "x.apps.test").await.unwrap();
    assert!(presented(&tls, &b.cert), "wildcard");
    let tls = connect(addr, verifying.clone(), "default.test").await.unwrap();
    assert!(presented(&tls, &default.cert));
    // By IP address: no SNI is sent, the default answers (and has the IP).
    let tls = connect(addr, verifying.clone(), "127.0.0.1").await.unwrap();
    assert!(presented(&tls, &default.cert));

    // A name nobody has: the default, which a verifying client then refuses.
    assert!(connect(addr, verifying, "other.test").await.is_err());
    let insecure = upstream_config(&UpstreamTlsOptions { insecure_skip_verify: true, ..Default::default() }).unwrap();
    let tls = connect(addr, insecure.clone(), "other.test").await.unwrap();
    assert!(presented(&tls, &default.cert));
    let tls = connect(addr, insecure, "y.x.apps.test").await.unwrap();
    assert!(presented(&tls, &default.cert), "a wildcard covers one label only");
}

#[tokio::test]
async fn reload_swaps_the_certificate_while_established_connections_continue() {
    let dir = tempfile::tempdir().unwrap();
    let source = pair(dir.path(), "server", &["localhost"]);
    let old_cert = dir.path().join("old.crt");
    std::fs::copy(&source.cert, &old_cert).unwrap();
    let store = Arc::new(CertStore::load(vec![source.clone()]).unwrap().0);
    let (config, _) = server_config(store.clone(), &ServerTlsOptions::default()).unwrap();
    let addr = echo_server(config).await;

    let (new_cert, new_key) = generate_self_signed(&hosts(&["localhost"])).unwrap();
    let new_cert_file = dir.path().join("new.crt");
    std::fs::write(&new_cert_file, &new_cert).unwrap();
    let ca = ca_file(dir.path(), "ca.pem", &[&old_cert, &new_cert_file]);
    let trusting_both = client(&ca, &[&TLS13, &TLS12], &[b"h2"]);

    let mut established = connect(addr, trusting_both.clone(), "localhost").await.unwrap();
    echo(&mut established, b"before").await;
    assert!(presented(&established, &old_cert));

    assert!(!store.files_changed());
    replace(&source.key, &new_key);
    replace(&source.cert, &new_cert);
    assert!(store.files_changed());
    assert!(store.reload().unwrap().is_empty());
    assert!(!store.files_changed());

    // A new client: one reusing `trusting_both` would resume its session
    // (TLS 1.3 ticket) and report the certificate of the first handshake.
    let mut fresh = connect(addr, client(&ca, &[&TLS13, &TLS12], &[b"h2"]), "localhost").await.unwrap();
    assert!(presented(&fresh, &new_cert_file));
    echo(&mut fresh, b"new").await;
    echo(&mut established, b"after the reload").await;
    assert!(presented(&established, &old_cert));

    // A client that only trusts the old certificate is now refused.
    let old_only = client(&old_cert, &[&TLS13], &[]);
    assert!(connect(addr, old_only, "localhost").await.is_err());
}

#[tokio::test]
async fn watcher_reloads_changed_files() {
    let dir = tempfile::tempdir().unwrap();
    let source = pair(dir.path(), "server", &["localhost"]);
    let store = Arc::new(CertStore::load(vec![source.clone()]).unwrap().0);
    let (config, _) = server_config(store.clone(), &ServerTlsOptions::default()).unwrap();
    let addr = echo_server(config).await;
    let watcher = tls::spawn_cert_watcher(&store, Duration::from_millis(20));

    let (new_cert, new_key) = generate_self_signed(&hosts(&["localhost"])).unwrap();
    replace(&source.key, &new_key);
    replace(&source.cert, &new_cert);
    let trusting_new = client(&source.cert, &[&TLS13], &[]);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if connect(addr, trusting_new.clone(), "localhost").await.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the watcher did not reload within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    watcher.abort();
}

#[tokio::test]
async fn watcher_ends_when_the_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CertStore::load(vec![pair(dir.path(), "s", &["localhost"])]).unwrap().0);
    let watcher = tls::spawn_cert_watcher(&store, Duration::from_millis(10));
    drop(store);
    tokio::time::timeout(WAIT, watcher).await.expect("watcher still running").unwrap();
}

#[test]
fn bad_inputs_give_precise_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = pair(d, "good", &["good.test"]);
    let other = pair(d, "other", &["other.test"]);
    let load = |cert: &Path, key: &Path| CertStore::load(vec![CertSource::new(cert, key)]).unwrap_err();

    let missing = d.join("missing.crt");
    assert_eq!(load(&missing, &good.key).to_string(), format!("certificate file {}: not found", missing.display()));
    let missing_key = d.join("missing.key");
    assert_eq!(
        load(&good.cert, &missing_key).to_string(),
        format!("private key file {}: not found", missing_key.display())
    );

    let garbage = d.join("garbage.crt");
    std::fs::write(&garbage, "not a certificate at all\n").unwrap();
    assert_eq!(
        load(&garbage, &good.key).to_string(),
        format!("certificate file {}: no PEM certificate in it (it is not PEM: no -----BEGIN line)", garbage.display())
    );
    assert_eq!(
        load(&good.cert, &garbage).to_string(),
        format!("private key file {}: no PEM private key in it (it is not PEM: no -----BEGIN line)", garbage.display())
    );

    assert!(matches!(load(&good.cert, &other.key), TlsError::KeyMismatch { .. }));
    assert_eq!(
        load(&good.cert, &other.key).to_string(),
        format!(
            "private key {} does not match certificate {}: their public keys differ (the server certificate must \
             come first in the certificate file)",
            other.key.display(),
            good.cert.display()
        )
    );

    assert_eq!(
        load(&good.cert, &good.cert).to_string(),
        format!(
            "private key file {}: holds a certificate, not a private key (are `cert` and `key` swapped?)",
            good.cert.display()
        )
    );
    assert_eq!(
        load(&good.key, &good.key).to_string(),
        format!(
            "certificate file {}: holds a private key, not a certificate (are `cert` and `key` swapped?)",
            good.key.display()
        )
    );
}

#[tokio::test]
async fn expired_and_future_certificates_are_warnings_not_errors() {
    let dir = tempfile::tempdir().unwrap();
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    let write = |stem: &str, from: SystemTime, until: SystemTime| {
        let (cert, key) = generate_self_signed_with_validity(&hosts(&["localhost"]), from, until).unwrap();
        let source = CertSource::new(dir.path().join(format!("{stem}.crt")), dir.path().join(format!("{stem}.key")));
        std::fs::write(&source.cert, cert).unwrap();
        std::fs::write(&source.key, key).unwrap();
        source
    };
    let expired = write("expired", now - 60 * day, now - day);
    let (store, warnings) = CertStore::load(vec![expired.clone()]).unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(matches!(&warnings[0], TlsWarning::Expired { path, .. } if *path == expired.cert));
    let text = warnings[0].to_string();
    assert!(text.starts_with(&format!("certificate {} expired on ", expired.cert.display())), "{text}");
    assert!(text.ends_with(" UTC; clients will refuse it"), "{text}");

    // It is still served: a verifying client refuses it, an insecure one does not.
    let (config, _) = server_config(Arc::new(store), &ServerTlsOptions::default()).unwrap();
    let addr = echo_server(config).await;
    assert!(connect(addr, client(&expired.cert, &[&TLS13], &[]), "localhost").await.is_err());
    let insecure = upstream_config(&UpstreamTlsOptions { insecure_skip_verify: true, ..Default::default() }).unwrap();
    let mut tls = connect(addr, insecure, "localhost").await.unwrap();
    echo(&mut tls, b"still served").await;

    let future = write("future", now + 2 * day, now + 400 * day);
    let (_, warnings) = CertStore::load(vec![future.clone()]).unwrap();
    assert!(matches!(&warnings[..], [TlsWarning::NotYetValid { path, .. }] if *path == future.cert), "{warnings:?}");

    let soon = write("soon", now - day, now + 3 * day + Duration::from_secs(600));
    let (_, warnings) = CertStore::load(vec![soon]).unwrap();
    assert!(matches!(&warnings[..], [TlsWarning::ExpiresSoon { days: 3, .. }]), "{warnings:?}");
}

#[tokio::test]
async fn upstream_verifies_against_the_ca_file_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, cert) = server_with(dir.path(), ServerTlsOptions::default()).await;
    let h1 = vec![b"http/1.1".to_vec()];

    let trusted =
        upstream_config(&UpstreamTlsOptions { ca_file: Some(cert.clone()), alpn: h1.clone(), ..Default::default() })
            .unwrap();
    let mut tls = connect(addr, trusted.clone(), "localhost").await.unwrap();
    assert_eq!(alpn(&tls), Some(b"http/1.1".to_vec()));
    echo(&mut tls, b"upstream").await;
    assert!(connect(addr, trusted, "wrong-name.test").await.is_err(), "name is checked");

    let stranger = pair(dir.path(), "stranger", &["localhost"]);
    let untrusted =
        upstream_config(&UpstreamTlsOptions { ca_file: Some(stranger.cert), ..Default::default() }).unwrap();
    assert!(connect(addr, untrusted, "localhost").await.is_err(), "unknown issuer is refused");

    let insecure =
        upstream_config(&UpstreamTlsOptions { insecure_skip_verify: true, alpn: h1, ..Default::default() }).unwrap();
    let mut tls = connect(addr, insecure, "wrong-name.test").await.unwrap();
    echo(&mut tls, b"insecure").await;
}

/// Counts the TLS 1.3 tickets a client is given, and otherwise stores
/// sessions as rustls' memory cache does (so the client can resume).
#[derive(Debug)]
struct CountingStore {
    inner: rustls::client::ClientSessionMemoryCache,
    tickets: std::sync::atomic::AtomicUsize,
}

impl rustls::client::ClientSessionStore for CountingStore {
    fn set_kx_hint(&self, name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(name)
    }
    fn set_tls12_session(&self, name: ServerName<'static>, value: rustls::client::Tls12ClientSessionValue) {
        self.inner.set_tls12_session(name, value)
    }
    fn tls12_session(&self, name: &ServerName<'_>) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name)
    }
    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: rustls::client::Tls13ClientSessionValue) {
        self.tickets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.insert_tls13_ticket(name, value)
    }
    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(name)
    }
}

/// A TLS 1.3 client for `cert` whose session store counts the tickets it is given.
fn counting_client(cert: &Path) -> (Arc<CountingStore>, Arc<ClientConfig>) {
    let store = Arc::new(CountingStore {
        inner: rustls::client::ClientSessionMemoryCache::new(8),
        tickets: Default::default(),
    });
    let mut config = (*client(cert, &[&TLS13], &[])).clone();
    config.resumption = rustls::client::Resumption::store(store.clone());
    (store, Arc::new(config))
}

#[tokio::test]
async fn one_ticket_per_handshake_and_resumption_works() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, cert) = server_with(dir.path(), ServerTlsOptions::default()).await;
    let (store, config) = counting_client(&cert);
    let mut resumed = Vec::new();
    for i in 0..3 {
        let mut tls = connect(addr, config.clone(), "localhost").await.unwrap();
        // Tickets come after the handshake: an exchange makes sure they were read.
        echo(&mut tls, b"ping").await;
        resumed.push(tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed));
        let want = i + 1;
        assert_eq!(store.tickets.load(std::sync::atomic::Ordering::SeqCst), want, "tickets after handshake {want}");
    }
    assert_eq!(resumed, [false, true, true], "the single ticket is enough to resume every time");
}

/// A TLS 1.3 session ticket is not sent on its own right after the
/// handshake: it waits for the server's first write and leaves with it.
/// TLS 1.2 handshakes (whose last flight is the server's) are unaffected.
#[tokio::test]
async fn tls13_ticket_leaves_with_the_first_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, cert) = server_with(dir.path(), ServerTlsOptions::default()).await;
    let (store, config) = counting_client(&cert);
    let mut tls = connect(addr, config, "localhost").await.unwrap();
    assert_eq!(version(&tls), Some(ProtocolVersion::TLSv1_3));
    // The handshake is complete on both sides, and nothing more comes
    // until the client asks for something.
    let quiet = tokio::time::timeout(Duration::from_millis(300), tls.get_ref().0.readable()).await;
    assert!(quiet.is_err(), "the server sent something before the first request");
    echo(&mut tls, b"first").await;
    assert_eq!(store.tickets.load(std::sync::atomic::Ordering::SeqCst), 1, "the ticket came with the answer");
    echo(&mut tls, b"second").await;
    assert_eq!(store.tickets.load(std::sync::atomic::Ordering::SeqCst), 1);

    // TLS 1.2: the handshake completes (the server's Finished is not held
    // back) and the connection works; a second connection resumes.
    let config = client(&cert, &[&TLS12], &[]);
    for want in [rustls::HandshakeKind::Full, rustls::HandshakeKind::Resumed] {
        let mut tls = connect(addr, config.clone(), "localhost").await.unwrap();
        assert_eq!(version(&tls), Some(ProtocolVersion::TLSv1_2));
        echo(&mut tls, b"tls12").await;
        assert_eq!(tls.get_ref().1.handshake_kind(), Some(want));
    }
}

/// A client that stops in the middle of the handshake, or sends garbage
/// instead of a ClientHello, gets an error from `accept` (no hang).
#[tokio::test]
async fn accept_fails_cleanly_on_bad_clients() {
    let dir = tempfile::tempdir().unwrap();
    let source = pair(dir.path(), "server", &["localhost"]);
    let (store, _) = CertStore::load(vec![source]).unwrap();
    let (config, _) = server_config(Arc::new(store), &ServerTlsOptions::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    for (what, bytes) in [
        ("plain HTTP", &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]),
        ("half a ClientHello", &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..]),
        ("nothing", &b""[..]),
    ] {
        let mut raw = TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        raw.write_all(bytes).await.unwrap();
        raw.shutdown().await.unwrap();
        let result = tokio::time::timeout(WAIT, tls::accept(config.clone(), tcp)).await.expect(what);
        let err = result.err().unwrap_or_else(|| panic!("{what}: handshake succeeded"));
        let kind = err.kind();
        assert!(
            matches!(kind, std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof),
            "{what}: {kind:?} {err}"
        );
    }
}

/// Records larger than the reader's buffer are handed out in pieces,
/// writes larger than a record are split, and a client that reads late
/// makes the server wait on a full socket (rustls's buffer full, writes
/// `Pending`): 8 MiB passes both ways intact.
#[tokio::test]
async fn large_messages_pass_both_ways_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, cert) = server_with(dir.path(), ServerTlsOptions::default()).await;
    for version in [&TLS13, &TLS12] {
        let mut tls = connect(addr, client(&cert, &[version], &[]), "localhost").await.unwrap();
        let msg: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let (mut rd, mut wr) = tokio::io::split(&mut tls);
        let send = async {
            wr.write_all(&msg).await.unwrap();
            wr.flush().await.unwrap();
        };
        let mut back = vec![0u8; msg.len()];
        let recv =
            async { tokio::time::timeout(WAIT, rd.read_exact(&mut back)).await.expect("echo timed out").unwrap() };
        tokio::join!(send, recv);
        assert!(back == msg, "the echo differs");
    }
}

/// One large write to a client that reads late: rustls's own buffer fills,
/// the write waits until the client reads, and everything arrives, ended
/// by the server's close_notify.
#[tokio::test]
async fn a_large_write_waits_for_a_slow_reader() {
    let dir = tempfile::tempdir().unwrap();
    let source = pair(dir.path(), "server", &["localhost"]);
    let (store, _) = CertStore::load(vec![source.clone()]).unwrap();
    let (config, _) = server_config(Arc::new(store), &ServerTlsOptions::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let msg: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let sent = msg.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = tls::accept(config, tcp).await.unwrap();
        tls.write_all(&sent).await.unwrap();
        tls.shutdown().await.unwrap();
    });
    let mut client = connect(addr, client(&source.cert, &[&TLS13], &[]), "localhost").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut got)).await.expect("read timed out").unwrap();
    assert!(got == msg, "got {} bytes, not the {} sent", got.len(), msg.len());
    server.await.unwrap();
}
